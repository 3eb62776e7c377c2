"""Consumer heartbeats: each replica writes its liveness and counters to one Redis hash.

``waitroom consumer check`` reads them: a replica is alive when its heartbeat is fresh. The
field is removed on a clean shutdown, so a stopped replica stops counting at once.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from shared import keys

INTERVAL_SECONDS = 5.0
#: A heartbeat older than this means the replica is stuck or gone.
MAX_AGE_SECONDS = 30.0


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Beat:
    """One replica's last heartbeat."""

    replica: str
    ts_ms: int
    data: dict[str, Any]

    def age_seconds(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.ts_ms / 1000

    def fresh(self, max_age: float = MAX_AGE_SECONDS) -> bool:
        return self.age_seconds() <= max_age


async def write(redis: Redis, replica: str, data: dict[str, Any]) -> None:
    body = {"ts": int(time.time() * 1000), **data}
    await redis.hset(keys.CONSUMER_HEARTBEATS, replica, json.dumps(body, sort_keys=True))


async def remove(redis: Redis, replica: str) -> None:
    await redis.hdel(keys.CONSUMER_HEARTBEATS, replica)


async def read(redis: Redis) -> list[Beat]:
    """Every replica's heartbeat, skipping unreadable entries."""
    beats = []
    for field, raw in (await redis.hgetall(keys.CONSUMER_HEARTBEATS)).items():
        try:
            data = json.loads(raw)
            ts = int(data.pop("ts"))
        except (ValueError, KeyError, TypeError):
            continue
        name = field.decode("utf-8", "replace") if isinstance(field, bytes) else str(field)
        beats.append(Beat(name, ts, data))
    return sorted(beats, key=lambda b: b.replica)
