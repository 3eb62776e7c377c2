"""Redis's clock as seen from the admitter: lease deadlines are in Redis time."""

from __future__ import annotations

import time

from redis.asyncio import Redis


class RedisClock:
    """The offset between Redis's clock and ours, refreshed by every sweep."""

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
