"""Per-event locks: which replica works an event now.

``SET NX PX`` with a random owner token takes a lock; renewing and releasing go through scripts
that check the token, so a replica whose lock ran out (and was taken over) can never extend or
delete the new owner's lock. The lock only spreads the work: the admit script is atomic, so two
replicas working one event at once still keep the cap and the order.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from shared import keys
from shared.scripts import Scripts


@dataclass
class Lock:
    """A lock this replica holds; ``valid_until`` is when it runs out by our clock."""

    event_id: str
    token: str
    valid_until: float

    @property
    def key(self) -> str:
        return keys.lock(self.event_id)

    def expired(self) -> bool:
        return time.monotonic() >= self.valid_until


class Locks:
    """Takes, renews and releases event locks for one replica.

    Redis errors propagate to the caller, whose loop retries them with backoff.
    """

    def __init__(self, scripts: Scripts, ttl_ms: int, replica_id: str) -> None:
        self.scripts = scripts
        self.ttl_ms = ttl_ms
        self.replica_id = replica_id
        self.acquired = 0
        self.renewed = 0
        self.lost = 0
        self.released = 0

    async def acquire(self, event_id: str) -> Lock | None:
        """Take the event's lock if nobody holds it; None when another replica does."""
        # The replica id in the token tells operators who holds a lock; the random part makes
        # each holding distinct, so a stale holder's renewal cannot match a new one.
        token = f"{self.replica_id}:{secrets.token_hex(12)}"
        started = time.monotonic()
        if not await self.scripts.acquire_lock(keys.lock(event_id), token, self.ttl_ms):
            return None
        self.acquired += 1
        return Lock(event_id, token, started + self.ttl_ms / 1000)

    async def renew(self, lock: Lock) -> bool:
        """Extend the lock; False when it is no longer ours (it ran out, or was taken over)."""
        started = time.monotonic()
        if await self.scripts.renew_lock(lock.key, lock.token, self.ttl_ms):
            lock.valid_until = started + self.ttl_ms / 1000
            self.renewed += 1
            return True
        self.lost += 1
        return False

    async def release(self, lock: Lock) -> bool:
        """Give the lock up so another replica can take the event at once."""
        released = await self.scripts.release_lock(lock.key, lock.token)
        if released:
            self.released += 1
        return released

    def __repr__(self) -> str:
        return (
            f"Locks(replica={self.replica_id!r}, acquired={self.acquired}, "
            f"renewed={self.renewed}, lost={self.lost}, released={self.released})"
        )
