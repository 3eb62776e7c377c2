"""Small things the admitter's loops share: which errors are retried, Redis's clock, pauses."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

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
