"""Waiting out Redis and Kafka outages without losing the message in hand."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.exceptions import (
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)

from shared import metrics
from shared.backoff import Outage

log = logging.getLogger("waitroom.consumer")

# Errors Redis answers while it is failing over, loading or full: they pass, so the message
# waits for Redis instead of being dead-lettered.
_PASSING = (ReadOnlyError, OutOfMemoryError, TryAgainError, ClusterDownError)
_PASSING_PREFIXES = ("LOADING", "BUSY", "MASTERDOWN", "NOREPLICAS", "TRYAGAIN", "CLUSTERDOWN")


class Stopped(Exception):
    """Shutdown was requested while waiting out an outage; the work in hand is abandoned."""


def passing(error: ResponseError) -> bool:
    """Whether a script's error is Redis being unavailable, not the message being bad."""
    return isinstance(error, _PASSING) or str(error).startswith(_PASSING_PREFIXES)


def redis_down(exc: BaseException) -> bool:
    """Whether an exception from a Redis call means "retry later" (not a bug of ours)."""
    if isinstance(exc, ResponseError):
        return passing(exc)
    return isinstance(exc, RedisError | OSError)


class Retrier:
    """Backs off between attempts, logs once per outage, and gives up only on shutdown."""

    def __init__(self, stopping: asyncio.Event) -> None:
        self.stopping = stopping
        self.redis = Outage("Redis", log)
        self.kafka = Outage("Kafka", log)

    def __repr__(self) -> str:
        return f"Retrier({self.redis!r}, {self.kafka!r})"

    async def wait(self, outage: Outage, exc: BaseException) -> None:
        """Record a failure and sleep the backoff; raise Stopped if shutdown comes first."""
        metrics.DEPENDENCY_ERRORS.labels(outage.name.lower()).inc()
        delay = outage.failed(exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), delay)
        if self.stopping.is_set():
            raise Stopped
