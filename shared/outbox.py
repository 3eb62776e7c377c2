"""Turning outbox stream entries (written by the Lua scripts) into Kafka messages."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from shared import keys, messages
from shared.redis_modes import durability_of, pinned
from shared.token import Signer, admission_claims, mint


@dataclass(frozen=True)
class OutboxEntry:
    entry_id: bytes
    topic: str
    message_id: str
    fields: dict[str, Any]


def _decode(entry_id: Any, raw: Any) -> OutboxEntry:
    return OutboxEntry(
        entry_id=bytes(entry_id),
        topic=bytes(raw[b"t"]).decode(),
        message_id=bytes(raw[b"k"]).decode(),
        fields=json.loads(raw[b"p"]),
    )


async def read(redis: Redis, event_id: str, count: int) -> list[OutboxEntry]:
    """The oldest ``count`` entries of an event's outbox, in the order they were recorded.

    With ``WAITROOM_REDIS_WAIT_REPLICAS`` set, only once that many replicas hold them (else
    ``NotReplicated``): a write of our own after the read, then ``WAIT`` on the same
    connection, covers every earlier write of every client, because the replication offset it
    waits for is the server's, not the connection's. So a failover can never take back an
    admission whose ``queue.ready`` went out.
    """
    durability = durability_of(redis)
    if not durability.on:
        rows = await redis.xrange(keys.outbox(event_id), "-", "+", count=count)
    else:

        async def queue(pipe: Any, i: int) -> None:
            if i == 0:
                pipe.xrange(keys.outbox(event_id), "-", "+", count=count)
            else:
                pipe.set(keys.relay_mark(event_id), int(time.time() * 1000))

        both = [keys.outbox(event_id), keys.relay_mark(event_id)]
        rows, _ = await pinned(redis, both, queue, durability)
        if isinstance(rows, Exception):
            raise rows
    return [_decode(entry_id, raw) for entry_id, raw in rows or []]


async def acknowledge(redis: Redis, event_id: str, entries: list[OutboxEntry]) -> int:
    """Remove entries Kafka has acknowledged."""
    if not entries:
        return 0
    return int(await redis.xdel(keys.outbox(event_id), *[e.entry_id for e in entries]))


def to_message(entry: OutboxEntry, secret: Signer, now_ms: int) -> messages.OutgoingMessage:
    """The contract message for an entry; ``queue.ready`` gets its checkout token minted here."""
    f = entry.fields
    event_id = str(f["event_id"])
    body: dict[str, Any]
    if entry.topic == messages.QUEUE_JOINED:
        body = messages.queue_joined(
            f["session_id"], f["user_id"], event_id, int(f["position"]), int(f["joined_ms"]), now_ms
        )
    elif entry.topic == messages.QUEUE_LEFT:
        body = messages.queue_left(
            f["session_id"], f["user_id"], event_id, f["reason"], int(f["left_ms"]), now_ms
        )
    elif entry.topic == messages.QUEUE_READY:
        claims = admission_claims(
            f["session_id"], f["user_id"], event_id, int(f["admitted_ms"]), int(f["expires_ms"])
        )
        body = messages.queue_ready(
            f["session_id"],
            f["user_id"],
            event_id,
            mint(secret, claims),
            int(f["admitted_ms"]),
            int(f["expires_ms"]),
            now_ms,
        )
    elif entry.topic == messages.WAITROOM_AUDIT:
        body = messages.audit_message(f, now_ms)
    elif entry.topic == messages.WAITROOM_DRAWS:
        body = messages.waitroom_draw(f, now_ms)
    else:
        raise ValueError(f"unknown outbox topic {entry.topic!r}")
    return messages.encode(entry.topic, event_id, entry.message_id, body)
