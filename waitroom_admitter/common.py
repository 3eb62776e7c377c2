"""Small things the admitter's loops share: which errors are retried, Redis's clock, pauses."""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import metrics
from shared.backoff import Outage

#: Failures of a Redis call that a loop retries with backoff instead of crashing: lost
#: connections and timeouts, but also errors Redis answers with during a failover (READONLY,
#: LOADING) or under memory pressure (OOM).
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)


class RedisClock:
    """Redis's time as seen from here; the admit script's lease deadlines are in Redis time."""

    def __init__(self) -> None:
        self.offset_ms = 0.0
        self.synced = False

    async def sync(self, redis: Redis) -> None:
        before = time.time()
        seconds, micros = await redis.time()
        after = time.time()
        self.offset_ms = seconds * 1000 + micros / 1000 - (before + after) * 500
        self.synced = True

    def now_ms(self) -> int:
        return int(time.time() * 1000 + self.offset_ms)


async def pause(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep for ``seconds``, or less if the process is asked to stop."""
    if seconds <= 0 or stopping.is_set():
        return
    try:
        async with asyncio.timeout(seconds):
            await stopping.wait()
    except TimeoutError:
        pass


class RedisHealth:
    """The process's one view of Redis, shared by every loop: an outage is logged when it
    starts and when it ends, however many loops fail meanwhile.

    When it ends, the idle pooled connections are dropped: those opened before the outage are
    dead, and each would otherwise fail once on its next use and look like a new outage.
    """

    def __init__(self, redis: Redis, logger: logging.Logger) -> None:
        self.redis = redis
        self.outage = Outage("redis", logger)

    def failed(self, exc: BaseException) -> float:
        """Record a failure; returns how long to wait before trying again."""
        metrics.DEPENDENCY_ERRORS.labels("redis").inc()
        return self.outage.failed(exc)

    async def succeeded(self) -> None:
        if self.outage.down:
            self.outage.recovered()
            await self.redis.connection_pool.disconnect(inuse_connections=False)

    def __repr__(self) -> str:
        return repr(self.outage)
