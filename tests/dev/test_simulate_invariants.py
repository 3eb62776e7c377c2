"""The rehearsal report's arithmetic on crafted inputs: percentiles, FIFO, peak checkout."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from waitroom_dev.simulate.invariants import (
    Summary,
    UserOutcome,
    Waiter,
    checkout_intervals,
    fifo_violations,
    is_lost,
    peak_concurrency,
    percentile,
    rate_series,
    waiters,
)


def test_percentile_interpolates_between_ranks() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 25) == pytest.approx(1.75)
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_percentile_agrees_with_the_standard_library() -> None:
    rng = random.Random(7)
    values = sorted(rng.expovariate(1.0) for _ in range(1001))
    # statistics.quantiles(method="inclusive") is the same linear rule on (n - 1).
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    for q in (1, 50, 95, 99):
        assert percentile(values, q) == pytest.approx(cuts[q - 1])


def test_summary_of_measurements_and_of_nothing() -> None:
    summary = Summary.of([30.0, 10.0, 20.0, 40.0, 50.0])
    assert summary.count == 5
    assert summary.p50 == 30.0
    assert summary.max == 50.0
    assert summary.mean == 30.0
    assert summary.p95 == pytest.approx(48.0)
    empty = Summary.of([]).to_json()
    assert empty == {"count": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}


def test_admission_in_join_order_is_not_a_violation() -> None:
    users = [Waiter(1, 100), Waiter(2, 100), Waiter(3, 250), Waiter(4, 300)]
    assert fifo_violations(users) == []


def test_overtaking_someone_still_waiting_is_a_violation() -> None:
    early, late = Waiter(1, 500), Waiter(2, 400)
    assert fifo_violations([late, early]) == [(late, early)]


def test_overtaking_someone_who_never_got_in_is_a_violation() -> None:
    stuck = Waiter(1, None)
    admitted = Waiter(2, 400)
    assert fifo_violations([stuck, admitted]) == [(admitted, stuck)]


def test_overtaking_someone_who_had_already_left_is_fine() -> None:
    # Ticket 1 left the queue at 300 (or its session expired); ticket 2 admitted at 400.
    users = [Waiter(1, None, left_ms=300), Waiter(2, 400)]
    assert fifo_violations(users) == []
    # ...but had ticket 1 still been waiting at 400, ticket 2 jumped it.
    assert len(fifo_violations([Waiter(1, None, left_ms=450), Waiter(2, 400)])) == 1


def test_one_batch_in_one_millisecond_is_not_a_violation() -> None:
    assert fifo_violations([Waiter(3, 100), Waiter(1, 100), Waiter(2, 100)]) == []


def test_each_admission_out_of_order_counts_once() -> None:
    # Ticket 1 waits until 900 while 2, 3 and 4 are admitted before it; 5 comes after.
    users = [Waiter(1, 900), Waiter(2, 100), Waiter(3, 200), Waiter(4, 300), Waiter(5, 950)]
    found = fifo_violations(users)
    assert [a.place for a, _ in found] == [2, 3, 4]
    assert {b.place for _, b in found} == {1}


def test_peak_concurrency_counts_overlaps_and_open_intervals() -> None:
    assert peak_concurrency([]) == 0
    assert peak_concurrency([(0, 10), (5, 15), (12, 20)]) == 2
    assert peak_concurrency([(0, None), (1, None), (2, 3)]) == 3
    # A slot freed and refilled in the same millisecond holds one user, not two.
    assert peak_concurrency([(0, 10), (10, 20), (20, 30)]) == 1


def _outcome(ticket: int, status: int, admitted: int = 0, finished: int = 0) -> UserOutcome:
    return UserOutcome(f"u{ticket}", 0.0, None, True, status, ticket, 0, admitted, finished)


def test_lost_means_never_told_how_the_wait_ended() -> None:
    def user(ready: float | None, saw_final: bool, admitted: int) -> UserOutcome:
        return UserOutcome("u", 0.0, ready, saw_final, 5, 1, 0, admitted, 0)

    assert not is_lost(user(ready=1.0, saw_final=False, admitted=100))  # saw READY
    assert not is_lost(user(ready=None, saw_final=True, admitted=0))  # left or expired waiting
    assert is_lost(user(ready=None, saw_final=False, admitted=0))  # still waiting, unheard
    assert is_lost(user(ready=None, saw_final=True, admitted=100))  # admitted, never told


def test_waiters_and_intervals_from_server_records() -> None:
    outcomes = [
        _outcome(1, 5, admitted=100, finished=300),  # completed
        _outcome(2, 8, finished=150),  # left while waiting
        _outcome(3, 3, admitted=200),  # still in checkout
        _outcome(4, 1),  # still waiting
        _outcome(0, 0),  # record gone: nothing to check
    ]
    assert waiters(outcomes) == [
        Waiter(1, 100, None),
        Waiter(2, None, 150),
        Waiter(3, 200, None),
        Waiter(4, None, None),
    ]
    assert checkout_intervals(outcomes) == [(100, 300), (200, None)]


def test_rate_series_buckets_per_second() -> None:
    times = [1000, 1100, 1999, 2000, 4500]
    assert rate_series(times, start_ms=1000) == [3.0, 1.0, 0.0, 1.0]
    assert rate_series([], start_ms=0) == []
    assert rate_series([1000, 1100], start_ms=1000, bucket_ms=500) == [4.0]
