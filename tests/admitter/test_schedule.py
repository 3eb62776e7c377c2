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
