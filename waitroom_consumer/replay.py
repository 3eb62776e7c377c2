"""Applying the last outcomes again when Redis turns out to be another server.

Redis acknowledges an outcome before its replica has it, and a restart with ``appendfsync
everysec`` can lose the last second, so a promoted or restarted server may lack outcomes whose
offsets this consumer already committed: their slots would stay taken until the checkout lease
ran out. Kafka still holds them. The watch notes the run ids of the servers holding the data,
and when one appears that it has not seen, the broker rewinds each held partition by
``WAITROOM_CONSUMER_REPLAY_SECONDS`` of handled messages; ``finish`` is idempotent, so what the
new server has is unchanged and what it lost is applied again.

The watch looks after every Redis outage the loop rode out and at every heartbeat: an idle
consumer hears of a failover only there, and a write (the heartbeat's) is what tells a
connection to a master Sentinel demoted that it must look for the new one.
"""

from __future__ import annotations

import logging
from typing import Any

from shared import metrics
from shared.redis_modes import server_ids
from waitroom_consumer.broker import Broker

log = logging.getLogger("waitroom.consumer")


class ServerWatch:
    """The Redis servers seen so far, and the rewind when a new one holds the data."""

    def __init__(self, redis: Any, broker: Broker, seconds: float) -> None:
        self.redis = redis
        self.broker = broker
        self.seconds = seconds
        self.known: set[str] = set()
        self.replays = 0

    def __repr__(self) -> str:
        return f"ServerWatch(servers={len(self.known)}, replays={self.replays})"

    async def check(self) -> None:
        """Read the servers' run ids; rewind if one is new (not at the first look). Redis
        errors propagate (the caller is riding out an outage or retries at the next beat)."""
        ids = await server_ids(self.redis)
        if ids is None:
            return  # a demoted master answered; its connections are dropped, look again later
        new = ids - self.known
        first = not self.known
        self.known |= ids
        if first or not new or self.seconds <= 0:
            return
        positions = await self.broker.rewind()
        self.replays += 1
        metrics.CONSUMER_REPLAYS.inc()
        log.warning(
            "Redis is another server now (run id %s): applying again the outcomes of the last "
            "%gs, from %s",
            ", ".join(sorted(new)),
            self.seconds,
            ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(positions.items())) or "nothing",
        )
