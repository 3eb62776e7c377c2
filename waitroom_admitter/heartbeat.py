"""Replica heartbeats: each admitter writes one per sweep; ``waitroom admitter check`` reads them.

The live replicas counted from these also decide each replica's fair share of the events.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass

from redis.asyncio import Redis

from shared import keys

#: Heartbeats older than this are deleted by any replica: the replica is long gone.
PRUNE_AFTER_SECONDS = 3600.0


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def wall_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Heartbeat:
    """One replica's last report."""

    replica: str
    ts: int
    events: int
    admitted: int
    interval: float
    pid: int

    def age_seconds(self, now_ms: int) -> float:
        return max(0.0, (now_ms - self.ts) / 1000)

    def encode(self) -> str:
        data = asdict(self)
        del data["replica"]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def decode(cls, replica: str, raw: bytes | str) -> Heartbeat:
        data = json.loads(raw)
        return cls(
            replica=replica,
            ts=int(data["ts"]),
            events=int(data.get("events", 0)),
            admitted=int(data.get("admitted", 0)),
            interval=float(data.get("interval", 1.0)),
            pid=int(data.get("pid", 0)),
        )


async def write(redis: Redis, beat: Heartbeat) -> None:
    await redis.hset(keys.ADMITTER_HEARTBEATS, beat.replica, beat.encode())


async def remove(redis: Redis, replica: str) -> None:
    await redis.hdel(keys.ADMITTER_HEARTBEATS, replica)


async def read_all(redis: Redis) -> list[Heartbeat]:
    """Every replica's heartbeat, newest first; unreadable entries are skipped."""
    raw = await redis.hgetall(keys.ADMITTER_HEARTBEATS)
    beats = []
    for field, value in raw.items():
        try:
            name = field.decode() if isinstance(field, bytes) else str(field)
            beats.append(Heartbeat.decode(name, value))
        except (ValueError, KeyError, TypeError):
            continue  # written by something else; never let it break the check
    return sorted(beats, key=lambda b: b.ts, reverse=True)


async def prune(redis: Redis, beats: list[Heartbeat], now_ms: int) -> int:
    """Delete heartbeats of replicas gone for over an hour."""
    old = [b.replica for b in beats if b.age_seconds(now_ms) > PRUNE_AFTER_SECONDS]
    if not old:
        return 0
    return int(await redis.hdel(keys.ADMITTER_HEARTBEATS, *old))
