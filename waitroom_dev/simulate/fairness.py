"""The sale-day checks of a rehearsal: the draw's places, abandoning users, wait estimates.

Pure functions over ``UserOutcome`` records (``invariants``), so each rule is checked on crafted
input. The rules they check are the waitroom's (docs/architecture.md, "Sale-day fairness"):

- A scheduled opening's pre-queue (tickets 1..n) is placed by the draw at places 1..n, a
  permutation; everyone who joins after the opening keeps place = ticket. The queue is FIFO by
  place, so the pre-queue goes first and later arrivals go in arrival order.
- With an idle timeout, a queued user not seen for longer than it when the admitter reaches
  them is dropped (CANCELLED, reason ``abandoned``). *Seen* counts the join, the moment the
  timeout was turned on and, for a pre-queue entrant, the draw. So an abandoning user reached
  sooner than that is admitted, by the rule: the rehearsal counts those apart and flags only
  an admission after the timeout ran out.
- The wait a JoinQueueResponse estimates is compared with the wait the server recorded
  (``admitted_ms - queued_ms``, both on Redis's clock), from the join for everyone: for a
  pre-queue entrant the estimate is the time to the opening plus half the pre-queue's drain,
  the expectation of a place nobody knows before the draw.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from waitroom_dev.simulate.invariants import (
    UserOutcome,
    Waiter,
    fifo_violations,
    percentile,
    waiters,
)

ABANDONED = "abandoned"  # the queue.left reason (shared.messages.LEFT_REASONS) of a dropped user
_TERMINAL = {5, 6, 7, 8}  # COMPLETED, FAILED, EXPIRED, CANCELLED
_CANCELLED = 8
# Estimates are whole seconds (rounded up), so a wait under a second is all rounding: relative
# errors are taken against at least this many seconds of real wait.
WAIT_FLOOR_SECONDS = 1.0


def place_of(ticket: int, ranks: Sequence[int]) -> int:
    """The place ``ticket`` held in the queue: the drawn place of a pre-queue ticket
    (``ranks[ticket - 1]``, tickets 1..len(ranks)), else the ticket itself."""
    if 0 < ticket <= len(ranks):
        return ranks[ticket - 1]
    return ticket


def is_permutation(ranks: Sequence[int]) -> bool:
    """Whether the drawn places are exactly 1..n, each once."""
    return sorted(ranks) == list(range(1, len(ranks) + 1))


def overtaking(first: Iterable[Waiter], later: Iterable[Waiter]) -> list[Waiter]:
    """Users of ``later`` admitted while a user of ``first`` was still waiting (admissions in
    the same millisecond as the last of ``first`` stopped waiting are one script call)."""
    until = max((w.waited_until for w in first), default=-math.inf)
    return [w for w in later if w.admitted_ms is not None and w.admitted_ms < until]


@dataclass(frozen=True)
class DrawOrder:
    """How admissions went around a draw: the pre-queue first, then arrival order."""

    entrants: int  # the pre-queue's size, as the draw fixed it
    ours: int  # of them, this run's users whose records were read
    permutation: bool  # the drawn places are 1..n
    prequeue_overtaken: int  # later arrivals admitted while a pre-queue user still waited
    fifo_after_opening: int  # violations of arrival order among later arrivals
    out_of_join_order: float  # share of admitted pre-queue pairs admitted against join order

    @classmethod
    def of(cls, outcomes: Sequence[UserOutcome], ranks: Sequence[int]) -> DrawOrder:
        n = len(ranks)
        pre = [o for o in outcomes if 0 < o.ticket <= n]
        post = [o for o in outcomes if o.ticket > n]
        return cls(
            entrants=n,
            ours=len(pre),
            permutation=is_permutation(ranks),
            prequeue_overtaken=len(overtaking(waiters(pre), waiters(post))),
            fifo_after_opening=len(fifo_violations(waiters(post))),
            out_of_join_order=inversion_share(
                [o.ticket for o in sorted(pre, key=lambda o: o.admitted_ms) if o.admitted_ms]
            ),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "entrants": self.entrants,
            "ours": self.ours,
            "permutation": self.permutation,
            "prequeue_overtaken": self.prequeue_overtaken,
            "fifo_after_opening": self.fifo_after_opening,
            "out_of_join_order": round(self.out_of_join_order, 4),
        }


def inversion_share(values: Sequence[int]) -> float:
    """The share of pairs out of ascending order: 0 sorted, 1 reversed, about 0.5 shuffled.

    Counted by merge sort (n log n): a pre-queue of a million is a few seconds, not hours.
    """
    n = len(values)
    pairs = n * (n - 1) // 2
    if not pairs:
        return 0.0

    def sort(items: list[int]) -> tuple[list[int], int]:
        if len(items) < 2:
            return items, 0
        mid = len(items) // 2
        left, a = sort(items[:mid])
        right, b = sort(items[mid:])
        merged, inversions, i, j = [], a + b, 0, 0
        while i < len(left) and j < len(right):
            if right[j] < left[i]:
                merged.append(right[j])
                inversions += len(left) - i
                j += 1
            else:
                merged.append(left[i])
                i += 1
        merged += left[i:] + right[j:]
        return merged, inversions

    return sort(list(values))[1] / pairs


@dataclass(frozen=True)
class IdleRule:
    """The event's idle timeout as ``admit.lua`` applies it (all times ms, Redis's clock)."""

    timeout_ms: int  # 0: off
    since_ms: int = 0  # when it was turned on: everyone counts as seen then
    drawn_ms: int = 0  # when the draw was done: every pre-queue entrant counts as seen then
    entrants: int = 0  # tickets 1..entrants were the pre-queue

    def seen_ms(self, outcome: UserOutcome) -> int:
        """When the waitroom last counted an abandoning user present (they never polled)."""
        seen = max(outcome.queued_ms, self.since_ms)
        if 0 < outcome.ticket <= self.entrants:
            seen = max(seen, self.drawn_ms)
        return seen

    def admitted_late(self, outcome: UserOutcome) -> bool:
        """Admitted though absent longer than the timeout when reached."""
        if not self.timeout_ms or not outcome.admitted_ms:
            return False
        return outcome.admitted_ms - self.seen_ms(outcome) > self.timeout_ms


@dataclass(frozen=True)
class AbandonedCount:
    """Where the abandoning users ended, and whether anyone present was dropped as absent."""

    users: int  # abandoning users who joined
    dropped: int  # CANCELLED with reason abandoned, never admitted: the point of the timeout
    admitted_in_time: int  # reached before their timeout ran out: the rule admits them
    admitted_late: int  # admitted after their timeout ran out: a fault
    unsettled: int  # no final status at the end (still queued, in checkout, or no record)
    other: int  # never admitted, ended another way (their queued session expired)
    present_dropped: int  # users who kept following, yet were dropped as abandoned: a fault
    admitted_prequeue: int = 0  # of the admitted, those from the pre-queue (seen at the draw)

    @classmethod
    def of(cls, outcomes: Iterable[UserOutcome], rule: IdleRule) -> AbandonedCount:
        users = dropped = in_time = late = unsettled = other = present = prequeue = 0
        for o in outcomes:
            is_dropped = o.status == _CANCELLED and o.reason == ABANDONED and not o.admitted_ms
            if not o.abandons:
                present += is_dropped
                continue
            users += 1
            if o.admitted_ms:
                late += rule.admitted_late(o)
                in_time += not rule.admitted_late(o)
                prequeue += 0 < o.ticket <= rule.entrants
            if o.status not in _TERMINAL:
                unsettled += 1
            elif is_dropped:
                dropped += 1
            elif not o.admitted_ms:
                other += 1
        return cls(users, dropped, in_time, late, unsettled, other, present, prequeue)

    @property
    def admitted(self) -> int:
        return self.admitted_in_time + self.admitted_late

    def to_json(self) -> dict[str, int]:
        return {
            "users": self.users,
            "dropped": self.dropped,
            "admitted": self.admitted,
            "admitted_in_time": self.admitted_in_time,
            "admitted_late": self.admitted_late,
            "unsettled": self.unsettled,
            "other": self.other,
            "present_dropped": self.present_dropped,
            "admitted_prequeue": self.admitted_prequeue,
        }


def relative_error(estimate_s: float, waited_s: float) -> float:
    """``(estimate - real) / real``: above 0 the estimate was too long. The real wait counts as
    at least ``WAIT_FLOOR_SECONDS``: an estimate is whole seconds."""
    return (estimate_s - waited_s) / max(waited_s, WAIT_FLOOR_SECONDS)


@dataclass(frozen=True)
class EstimateError:
    """Relative errors of the estimates at join against the real waits of admitted users."""

    count: int
    median: float  # signed: the bias (above 0: estimates too long)
    abs_p50: float  # the median user's error, either way
    abs_p90: float

    @classmethod
    def of(cls, pairs: Iterable[tuple[float, float]]) -> EstimateError:
        """From ``(estimate_s, waited_s)`` pairs."""
        errors = sorted(relative_error(e, w) for e, w in pairs)
        sizes = sorted(abs(e) for e in errors)
        return cls(
            len(errors), percentile(errors, 50), percentile(sizes, 50), percentile(sizes, 90)
        )

    def to_json(self) -> dict[str, float | int | None]:
        def clean(value: float) -> float | None:
            return None if math.isnan(value) else round(value, 4)

        return {
            "count": self.count,
            "median": clean(self.median),
            "abs_p50": clean(self.abs_p50),
            "abs_p90": clean(self.abs_p90),
        }


def estimate_pairs(
    outcomes: Iterable[UserOutcome], entrants: int = 0
) -> list[tuple[int, float, bool]]:
    """``(estimate_s, waited_s, in_prequeue)`` of every admitted user who got an estimate;
    the real wait is the server's, join to admission; tickets 1..``entrants`` were the
    pre-queue."""
    return [
        (o.estimate_s, (o.admitted_ms - o.queued_ms) / 1000, 0 < o.ticket <= entrants)
        for o in outcomes
        if o.admitted_ms and o.estimate_s is not None
    ]
