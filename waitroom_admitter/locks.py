"""Per-event locks: which replica works an event now.

``SET NX PX`` with a random owner token takes a lock; renewing and releasing go through scripts
that check the token, so a replica whose lock ran out (and was taken over) can never extend or
delete the new owner's lock. The lock only spreads the work: the admit script is atomic, so two
replicas working one event at once still keep the cap and the order.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from shared import keys
from shared.scripts import RENEW_CHUNK, Scripts


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

    def _token(self) -> str:
        # The replica id in the token tells operators who holds a lock; the random part makes
        # each holding distinct, so a stale holder's renewal cannot match a new one.
        return f"{self.replica_id}:{secrets.token_hex(12)}"

    async def acquire_many(self, event_ids: Sequence[str]) -> list[Lock]:
        """Take the locks of those events nobody holds (``SET NX PX``), in one round trip per
        server; the events another replica holds are left out."""
        wanted = [(event_id, self._token()) for event_id in event_ids]
        started = time.monotonic()
        taken = await self.scripts.acquire_locks(
            [(keys.lock(event_id), token) for event_id, token in wanted], self.ttl_ms
        )
        valid_until = started + self.ttl_ms / 1000
        locks = [
            Lock(e, token, valid_until) for (e, token), ok in zip(wanted, taken, strict=True) if ok
        ]
        self.acquired += len(locks)
        return locks

    async def renew_all(self, locks: Sequence[Lock]) -> list[bool]:
        """Extend every lock still ours, in a few round trips (one per server and 1,000 locks,
        or per slot in a cluster); for each, False when it is no longer ours (it ran out, or
        was taken over). One round trip per lock, the renewals of thousands of locks fell
        behind their lifetime and the locks ran out (docs/benchmarks.md, "Many events").

        A lock whose call met an error counts as renewed while it is still valid by our
        clock; a connection error raises for all.
        """
        out = []
        for start in range(0, len(locks), RENEW_CHUNK):
            out += await self._renew_chunk(locks[start : start + RENEW_CHUNK])
        return out

    async def _renew_chunk(self, locks: Sequence[Lock]) -> list[bool]:
        # A call per chunk rather than one pipeline of all: packing 10,000 locks at once held
        # the event loop for 10-16 ms, the refill p99's tail with 10,000 events.
        started = time.monotonic()
        replies = await self.scripts.renew_locks(
            [(lock.key, lock.token) for lock in locks], self.ttl_ms
        )
        out = []
        for lock, reply in zip(locks, replies, strict=True):
            if reply is True:
                lock.valid_until = started + self.ttl_ms / 1000
                self.renewed += 1
            elif reply is False:
                self.lost += 1
            out.append(reply if isinstance(reply, bool) else not lock.expired())
        return out

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
