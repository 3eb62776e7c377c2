"""The admitter's pure scheduling decisions."""

from __future__ import annotations

import pytest

from shared.scripts import AdmitResult
from waitroom_admitter import schedule


def result(admitted: int = 0, retry_ms: int = -1, next_lease_ms: int = -1) -> AdmitResult:
    return AdmitResult(
        admitted=admitted,
        expired=0,
        reclaimed=0,
        queue_length=10,
        in_checkout=5,
        retry_ms=retry_ms,
        next_lease_ms=next_lease_ms,
        waits_ms=[0] * admitted,
    )


def test_a_full_batch_or_a_zero_retry_means_admit_again_at_once() -> None:
    assert schedule.admit_again_now(result(admitted=100), batch_size=100)
    assert schedule.admit_again_now(result(admitted=3, retry_ms=0), batch_size=100)
    assert not schedule.admit_again_now(result(admitted=3, retry_ms=7), batch_size=100)
    assert not schedule.admit_again_now(result(admitted=0, retry_ms=-1), batch_size=100)


def test_the_wait_is_the_earliest_of_token_refill_lease_end_and_sweep() -> None:
    now = 1_000_000
    # Only the sweep bounds a wait for which nothing is due.
    assert schedule.wait_seconds(result(), now, 1.0) == 1.0
    # The token bucket refills first.
    assert schedule.wait_seconds(result(retry_ms=40), now, 1.0) == pytest.approx(0.04)
    # A lease running out in 300 ms frees a slot before the sweep; a small margin after it.
    lease = schedule.wait_seconds(result(next_lease_ms=now + 300), now, 1.0)
    assert 0.3 < lease < 0.31
    assert schedule.wait_seconds(result(retry_ms=500, next_lease_ms=now + 300), now, 1.0) == lease
    # A lease far away never delays past the sweep.
    assert schedule.wait_seconds(result(next_lease_ms=now + 60_000), now, 1.0) == 1.0


def test_a_lease_already_due_means_no_wait() -> None:
    now = 1_000_000
    assert schedule.wait_seconds(result(next_lease_ms=now - 50), now, 1.0) == 0.0


@pytest.mark.parametrize(
    ("events", "replicas", "share"),
    [(0, 3, 0), (1, 3, 1), (3, 3, 1), (4, 3, 2), (10, 1, 10), (10, 0, 10), (7, 2, 4)],
)
def test_fair_shares_always_cover_every_event(events: int, replicas: int, share: int) -> None:
    assert schedule.fair_share(events, replicas) == share
    assert share * max(1, replicas) >= events


def test_locks_are_renewed_three_times_per_lifetime() -> None:
    assert schedule.renew_interval(3000) == 1.0


def idle_result(retry_ms: int = -1) -> AdmitResult:
    """Nobody queued, nobody in checkout, no lease."""
    return AdmitResult(0, 0, 0, 0, 0, retry_ms, -1, [])


def test_only_an_event_with_nobody_queued_or_in_checkout_is_idle() -> None:
    assert schedule.idle(idle_result())
    assert not schedule.idle(result())  # ten queued, five in checkout
    leased = AdmitResult(0, 0, 0, 0, 0, -1, 5_000, [])
    assert not schedule.idle(leased)


def test_an_idle_event_waits_the_idle_wait_but_never_past_its_opening() -> None:
    now = 1_000_000
    assert schedule.wait_seconds(idle_result(), now, 1.0, 30.0) == 30.0
    # A busy event keeps the sweep whatever the idle wait.
    assert schedule.wait_seconds(result(), now, 1.0, 30.0) == 1.0
    # Before a scheduled opening the script's retry_ms is the time left: the wait ends there.
    assert schedule.wait_seconds(idle_result(retry_ms=2_500), now, 1.0, 30.0) == 2.5
    # An idle wait shorter than the sweep never shortens it.
    assert schedule.wait_seconds(idle_result(), now, 1.0, 0.2) == 1.0


def test_idle_waits_grow_with_the_events_so_their_calls_stay_bounded() -> None:
    assert schedule.idle_wait(1) == schedule.IDLE_WAIT_SECONDS
    for events in (1_000, 10_000, 100_000):
        assert events / schedule.idle_wait(events) <= schedule.IDLE_CHECKS_PER_SECOND
        upkeeps = events / schedule.idle_upkeep(events)
        assert upkeeps <= schedule.IDLE_UPKEEPS_PER_SECOND
    assert schedule.idle_upkeep(1) == schedule.IDLE_UPKEEP_SECONDS
