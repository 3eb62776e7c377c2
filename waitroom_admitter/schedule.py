"""Pure scheduling decisions of the admitter, kept apart from I/O so they can be unit tested."""

from __future__ import annotations

import math

from shared.scripts import AdmitResult

#: A wake-up planned for a lease deadline lands this much after it, so the lease has surely
#: run out by Redis's clock when the admit script looks at it.
LEASE_MARGIN_MS = 2


def admit_again_now(result: AdmitResult, batch_size: int) -> bool:
    """Whether to call the admit script again at once rather than wait.

    A full batch means more may be admissible right away; ``retry_ms == 0`` is the script saying
    so outright (tokens and room left, users waiting).
    """
    return result.admitted >= batch_size or result.retry_ms == 0


def wait_seconds(result: AdmitResult, redis_now_ms: int, sweep_seconds: float) -> float:
    """How long to sleep before the next admit call, unless woken earlier.

    The earliest of: when the token bucket allows the next admission (``retry_ms``), when the
    first slot lease runs out (it frees a slot and must be closed as EXPIRED), and the sweep,
    which bounds every wait so a missed wake-up costs at most one sweep.
    """
    candidates = [sweep_seconds]
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
