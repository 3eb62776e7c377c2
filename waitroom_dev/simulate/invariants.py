"""The rehearsal's pure checks: FIFO violations, peak checkout concurrency, percentiles.

Pure functions over plain records (``UserOutcome``, ``Sample``, ``Waiter``), so they can be
checked on crafted inputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of sorted values, interpolating between ranks.

    This is the "linear" method (numpy's default): rank ``q/100 * (n - 1)``. NaN when empty.
    """
    if not ordered:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    rank = q / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Summary:
    """Count and spread of a set of measurements (in the unit they were given in)."""

    count: int
    p50: float
    p95: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Summary:
        ordered = sorted(values)
        if not ordered:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(
            count=len(ordered),
            p50=percentile(ordered, 50),
            p95=percentile(ordered, 95),
            p99=percentile(ordered, 99),
            max=ordered[-1],
            mean=sum(ordered) / len(ordered),
        )

    def to_json(self, digits: int = 4) -> dict[str, float | int | None]:
        def clean(value: float) -> float | None:
            return None if math.isnan(value) else round(value, digits)

        return {
            "count": self.count,
            "p50": clean(self.p50),
            "p95": clean(self.p95),
            "p99": clean(self.p99),
            "max": clean(self.max),
            "mean": clean(self.mean),
        }


@dataclass(frozen=True)
class Waiter:
    """One user as the FIFO check sees them.

    ``place`` is their place in the queue's order: the ticket (join order) for everyone who
    joined without a draw, the drawn place for a scheduled opening's pre-queue (see
    ``fairness.place_of``); ``admitted_ms`` is when they were let into checkout (None: never);
    ``left_ms`` is when they stopped waiting without being admitted (left, dropped as absent,
    or their queued session expired; None: still waiting).
    """

    place: int
    admitted_ms: int | None
    left_ms: int | None = None

    @property
    def waited_until(self) -> float:
        """When this user stopped waiting; infinity for one still waiting at the end."""
        if self.admitted_ms is not None:
            return self.admitted_ms
        if self.left_ms is not None:
            return self.left_ms
        return math.inf


def fifo_violations(waiters: Iterable[Waiter]) -> list[tuple[Waiter, Waiter]]:
    """Users admitted while someone who joined earlier was still waiting.

    Returns ``(admitted, overtaken)`` pairs, one per violating admission, naming the earliest
    overtaken user. Admissions in the same millisecond are one batch of one atomic step, which
    the script takes from the queue front in place order, so they do not count. A user dropped
    as abandoned left the queue when the script reached them, so the users behind them taking
    the place are not violations either.
    """
    violations = []
    longest: Waiter | None = None  # among earlier places, the one who waited longest
    for waiter in sorted(waiters, key=lambda w: w.place):
        if (
            waiter.admitted_ms is not None
            and longest is not None
            and longest.waited_until > waiter.admitted_ms
        ):
            violations.append((waiter, longest))
        if longest is None or waiter.waited_until > longest.waited_until:
            longest = waiter
    return violations


def peak_concurrency(intervals: Iterable[tuple[int, int | None]]) -> int:
    """Most intervals open at once; ``(start, end)`` with end None for one still open.

    An interval ending at the same instant another starts is closed first: a freed slot and
    its refill in the same millisecond are not two users at once.
    """
    edges: list[tuple[float, int]] = []
    for start, end in intervals:
        edges.append((start, 1))
        edges.append((math.inf if end is None else end, -1))
    edges.sort()  # at equal times -1 sorts before +1
    peak = current = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


def rate_series(times_ms: Iterable[int], start_ms: int, bucket_ms: int = 1000) -> list[float]:
    """Events per second in consecutive buckets from ``start_ms`` (for the admission rate)."""
    counts: dict[int, int] = {}
    for t in times_ms:
        index = max(0, (t - start_ms) // bucket_ms)
        counts[index] = counts.get(index, 0) + 1
    if not counts:
        return []
    per_second = 1000 / bucket_ms
    return [counts.get(i, 0) * per_second for i in range(max(counts) + 1)]


@dataclass(frozen=True)
class UserOutcome:
    """One joined user at the end of a run: what the client saw and what the server recorded."""

    user_id: str
    join_sent_s: float
    ready_seen_s: float | None
    saw_final: bool  # the client saw a final status (COMPLETED, FAILED, EXPIRED, CANCELLED)
    status: int  # the server's final status (0 when the record is gone)
    ticket: int
    queued_ms: int
    admitted_ms: int
    finished_ms: int
    reason: str = ""  # why the session left the queue or checkout (the record's reason)
    abandons: bool = False  # this user stopped following right after joining, on purpose
    estimate_s: int | None = None  # the wait the JoinQueueResponse estimated
    place: int = 0  # place in the queue's order; 0: the ticket (no draw placed it)


@dataclass(frozen=True)
class Sample:
    """Redis sampled during the run: seconds since the start, queue length, users in checkout."""

    t: float
    queue_length: int
    in_checkout: int


_TERMINAL = {5, 6, 7, 8}  # COMPLETED, FAILED, EXPIRED, CANCELLED


def is_lost(outcome: UserOutcome) -> bool:
    """Joined, and never told how the wait ended: never saw READY, and did not see the final
    status of a session that was never admitted. A user admitted without seeing READY missed
    their turn, which is as bad as being dropped. An abandoning user stopped listening on
    purpose; whether the waitroom settled them is ``fairness.AbandonedCount``'s question."""
    if outcome.abandons or outcome.ready_seen_s is not None:
        return False
    return not (outcome.saw_final and not outcome.admitted_ms)


def waiters(outcomes: Iterable[UserOutcome]) -> list[Waiter]:
    """The FIFO check's view of the users whose records were read."""
    result = []
    for o in outcomes:
        if not o.ticket:
            continue
        left = o.finished_ms if not o.admitted_ms and o.status in _TERMINAL else None
        result.append(Waiter(o.place or o.ticket, o.admitted_ms or None, left))
    return result


def checkout_intervals(outcomes: Iterable[UserOutcome]) -> list[tuple[int, int | None]]:
    """When each admitted user held a checkout slot (end None: still holding it)."""
    return [
        (o.admitted_ms, o.finished_ms if o.status in _TERMINAL and o.finished_ms else None)
        for o in outcomes
        if o.admitted_ms
    ]
