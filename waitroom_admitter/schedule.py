"""Pure scheduling decisions of the admitter, kept apart from I/O so they can be unit tested."""

from __future__ import annotations

import math

from shared.scripts import AdmitResult

#: A wake-up planned for a lease deadline lands this much after it, so the lease has surely
#: run out by Redis's clock when the admit script looks at it.
LEASE_MARGIN_MS = 2

#: The shortest wait of an idle event's admission loop (nobody queued, nobody in checkout, no
#: opening due) when nothing is announced. Every change that can make such an event admissible
#: announces itself on the notify channel (a join with room, a leave, an outcome, an update or
#: resume, a draw or recovery finished; ``EventWorker`` lists them), and a lost subscription
#: wakes every owned event when it is made again, so this wait only bounds a wake-up lost some
#: other way. Checking each idle event every sweep cost 10,000 admit calls a second with
#: 10,000 events (docs/benchmarks.md, "Many events").
IDLE_WAIT_SECONDS = 30.0
#: With many idle events the waits grow so that their checks add up to at most this many admit
#: calls a second per replica: about 5 ms of CPU (90 us a call here), whatever the count.
IDLE_CHECKS_PER_SECOND = 50.0
#: The shortest time between two upkeeps of an idle event (purge, metrics, the relay's check).
IDLE_UPKEEP_SECONDS = 30.0
#: Upkeeps of idle events (four round trips each) a second per replica, at most.
IDLE_UPKEEPS_PER_SECOND = 10.0
#: Most new event locks one sweep tries to take. Taking every free lock of 10,000 events in one
#: sweep held the loop for seconds while the held locks' renewals waited and ran out.
ACQUIRE_PER_SWEEP = 1000


def admit_again_now(result: AdmitResult, batch_size: int) -> bool:
    """Whether to call the admit script again at once rather than wait.

    A full batch means more may be admissible right away; ``retry_ms == 0`` is the script saying
    so outright (tokens and room left, users waiting).
    """
    return result.admitted >= batch_size or result.retry_ms == 0


def idle(result: AdmitResult) -> bool:
    """Whether the event has nobody queued, nobody in checkout and no lease to run out: nothing
    can become admissible here without an announcement (or the opening, which ``retry_ms``
    says)."""
    return result.queue_length == 0 and result.in_checkout == 0 and result.next_lease_ms < 0


def idle_wait(owned_events: int) -> float:
    """The longest wait of an idle event's admission loop on a replica owning ``owned_events``:
    ``IDLE_WAIT_SECONDS``, or more so their checks stay within ``IDLE_CHECKS_PER_SECOND``."""
    return max(IDLE_WAIT_SECONDS, owned_events / IDLE_CHECKS_PER_SECOND)


def idle_upkeep(owned_events: int) -> float:
    """Seconds between two upkeeps of an idle event on a replica owning ``owned_events``."""
    return max(IDLE_UPKEEP_SECONDS, owned_events / IDLE_UPKEEPS_PER_SECOND)


def wait_seconds(
    result: AdmitResult, redis_now_ms: int, sweep_seconds: float, idle_seconds: float = 0.0
) -> float:
    """How long to sleep before the next admit call, unless woken earlier.

    The earliest of: when the token bucket allows the next admission (``retry_ms``, also the
    time left before a scheduled opening), when the first slot lease runs out (it frees a slot
    and must be closed as EXPIRED), and the sweep, which bounds every wait so a missed wake-up
    costs at most one sweep. An idle event (``idle``) waits ``idle_seconds`` instead of the
    sweep when that is longer: only an announcement can change it.
    """
    candidates = [max(sweep_seconds, idle_seconds) if idle(result) else sweep_seconds]
    if result.retry_ms > 0:
        candidates.append(result.retry_ms / 1000)
    if result.next_lease_ms >= 0:
        candidates.append((result.next_lease_ms - redis_now_ms + LEASE_MARGIN_MS) / 1000)
    return max(0.0, min(candidates))


def fair_share(events: int, replicas: int) -> int:
    """The most events one replica should own when ``replicas`` share ``events``.

    Rounded up, so the live replicas together always have room for every event.
    """
    if events <= 0:
        return 0
    return math.ceil(events / max(1, replicas))


def renew_interval(lock_ttl_ms: int) -> float:
    """Seconds between lock renewals: a third of the lifetime, so two renewals may fail (a
    slow Redis, a long pause) before the lock runs out."""
    return lock_ttl_ms / 3000
