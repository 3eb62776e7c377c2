"""Worker heartbeats: each replica writes its liveness and counters to its role's Redis hash.

A heartbeat is ``replica id -> JSON`` with ``ts`` (the writer's wall clock, ms), ``interval``
(seconds until the next one) and whatever counters the role reports. ``waitroom admitter check`` and
``waitroom consumer check`` read them (for liveness probes), and admitters count live replicas from
them to share events. A clean shutdown removes its field, so a stopped replica stops counting at
once.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

#: A heartbeat is stale after this many of its writer's intervals (but never under
#: ``MIN_MAX_AGE_SECONDS``, so a short hiccup does not fail a liveness probe).
MISSED_INTERVALS = 3
MIN_MAX_AGE_SECONDS = 5.0


def max_age(interval_seconds: float) -> float:
    """Age in seconds past which a heartbeat written every ``interval_seconds`` is stale."""
    return max(MIN_MAX_AGE_SECONDS, MISSED_INTERVALS * interval_seconds)


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def wall_ms() -> int:
    """Heartbeats carry their writer's wall clock; readers compare against their own."""
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Beat:
    """One replica's last heartbeat."""

    replica: str
    ts_ms: int
    data: dict[str, Any]

    def age_seconds(self, now_ms: int | None = None) -> float:
        return max(0.0, ((wall_ms() if now_ms is None else now_ms) - self.ts_ms) / 1000)

    @property
    def max_age(self) -> float:
        """When this heartbeat goes stale, from the interval its writer reported (``interval``
        in its data, seconds)."""
        try:
            interval = float(self.data.get("interval", 1.0))
        except (TypeError, ValueError):
            interval = 1.0
        return max_age(interval)

    def fresh(self, max_age: float | None = None, now_ms: int | None = None) -> bool:
        """Whether the heartbeat is at most ``max_age`` seconds old (default: its own)."""
        limit = self.max_age if max_age is None else max_age
        return self.age_seconds(now_ms) <= limit


async def write(redis: Redis, key: str, replica: str, data: dict[str, Any]) -> None:
    body = {"ts": wall_ms(), **data}
    await redis.hset(key, replica, json.dumps(body, sort_keys=True, separators=(",", ":")))


async def remove(redis: Redis, key: str, replica: str) -> None:
    await redis.hdel(key, replica)


async def read(redis: Redis, key: str) -> list[Beat]:
    """Every replica's heartbeat, by replica id; unreadable entries are skipped, so something
    else writing the hash can never break a check."""
    beats = []
    for field, raw in (await redis.hgetall(key)).items():
        try:
            data = json.loads(raw)
            ts = int(data.pop("ts"))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        name = field.decode("utf-8", "replace") if isinstance(field, bytes) else str(field)
        beats.append(Beat(name, ts, data))
    return sorted(beats, key=lambda b: b.replica)


async def prune(redis: Redis, key: str, beats: list[Beat], older_than_seconds: float) -> int:
    """Delete heartbeats of replicas gone for longer than ``older_than_seconds``."""
    now = wall_ms()
    old = [b.replica for b in beats if b.age_seconds(now) > older_than_seconds]
    return int(await redis.hdel(key, *old)) if old else 0
