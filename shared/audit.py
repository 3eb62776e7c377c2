"""The audit trail: who changed an event, when, from where, and what the values were.

``event_save.lua`` records every operator change (create, update, pause, resume, close) in the
event's audit stream (``keys.audit``) and, in the same atomic step, in its outbox for the
``waitroom.audit`` topic, so the admitter's relay publishes it like any other message and it
reaches the company's logs even when Redis forgets it. The stream keeps ``RETENTION_MS`` of
history, at most ``MAX_ENTRIES`` entries per event. A deletion removes the event's stream with
its other keys, so ``waitroom event delete`` publishes that last record to Kafka itself.
"""

from __future__ import annotations

import getpass
import json
import socket
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from shared import keys

TOPIC = "waitroom.audit"

#: Three months: long enough to answer "who changed the rate during last month's sale".
RETENTION_MS = 90 * 24 * 3600 * 1000
#: An operator changes an event a few dozen times per sale; 10,000 entries of ~300 bytes
#: (3 MB) bound the stream of an event that a script updates in a loop.
MAX_ENTRIES = 10_000


def operator_name(by: str | None = None) -> str:
    """``by``, else the OS user running the command."""
    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, no LOGNAME (a bare container)
        return "unknown"


@dataclass(frozen=True)
class Actor:
    """Who makes a change and with which command; the script adds the time and the values."""

    action: str
    by: str
    host: str
    publish: bool = True
    retention_ms: int = RETENTION_MS
    max_entries: int = MAX_ENTRIES

    @classmethod
    def here(cls, action: str, by: str | None = None) -> Actor:
        """An operator on this host: the change is recorded and published."""
        return cls(action, operator_name(by), socket.gethostname())

    @classmethod
    def program(cls, action: str) -> Actor:
        """Code changing an event by itself (the dev stack's demo event, benchmarks, tests):
        recorded in the event's stream, not published, so it adds nothing to the outbox that
        carries the users' messages."""
        return cls(action, f"program:{operator_name()}", socket.gethostname(), publish=False)

    def to_json(self) -> str:
        fields = {"action": self.action, "by": self.by, "host": self.host}
        return json.dumps({**fields, "publish": self.publish})


@dataclass(frozen=True)
class Entry:
    """One recorded change; ``changes`` maps a config field to ``[old, new]`` (old is None
    when the event was created)."""

    event_id: str
    action: str
    by: str
    host: str
    at_ms: int
    changes: dict[str, list[str | None]]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        raw = data.get("changes")
        changes = raw if isinstance(raw, dict) else {}
        return cls(
            event_id=str(data.get("event_id", "")),
            action=str(data.get("action", "?")),
            by=str(data.get("by", "?")),
            host=str(data.get("host", "?")),
            at_ms=int(data.get("at_ms", 0)),
            changes={str(k): list(v) for k, v in changes.items() if isinstance(v, list)},
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "action": self.action,
            "by": self.by,
            "host": self.host,
            "at_ms": self.at_ms,
            "changes": self.changes,
        }

    def describe_changes(self) -> str:
        parts = []
        for name, (old, new) in sorted(self.changes.items()):
            parts.append(f"{name} {new}" if old is None else f"{name} {old} -> {new}")
        return ", ".join(parts)


async def history(redis: Redis, event_id: str, limit: int) -> list[Entry]:
    """The newest ``limit`` changes of an event, oldest first; unreadable entries are
    skipped (whatever else writes the stream cannot break the listing)."""
    rows = await redis.xrevrange(keys.audit(event_id), "+", "-", count=limit)
    entries = []
    row: Any
    for row in reversed(rows or []):
        fields = row[1]
        try:
            entries.append(Entry.from_json(json.loads(fields[b"a"])))
        except (KeyError, ValueError, TypeError, AttributeError):
            continue
    return entries


def deletion(event_id: str, actor: Actor, dropped: dict[str, int], at_ms: int) -> Entry:
    """The record of a deletion, which ``waitroom event delete`` publishes itself: the
    event's stream and outbox are gone with it. ``dropped`` counts what was still held."""
    changes: dict[str, list[str | None]] = {
        name: [str(count), None] for name, count in dropped.items() if count
    }
    return Entry(event_id, actor.action, actor.by, actor.host, at_ms, changes)


def publish(entry: Entry) -> str | None:
    """Send ``entry`` to ``waitroom.audit`` and wait for Kafka's acknowledgement; None when it
    was acknowledged, else why not (Kafka off, unreachable, or refusing)."""
    from shared import messages
    from shared import settings as settings_mod
    from shared.kafka import bootstrap_servers, kafka_producer, probe_kafka, send_and_wait
    from shared.timefmt import now_ms

    common = settings_mod.load(settings_mod.CommonSettings)
    tuning = settings_mod.load(settings_mod.KafkaClientSettings)
    if not common.kafka_enabled:
        return "Kafka is off (WAITROOM_KAFKA_BOOTSTRAP_SERVERS is empty)"
    fields = {**entry.to_json(), "changes": entry.changes}
    body = messages.audit_message(fields, now_ms())
    message_id = f"{entry.event_id}:audit:delete:{entry.at_ms}"
    message = messages.encode(TOPIC, entry.event_id, message_id, body)
    headers = [(messages.MESSAGE_ID_HEADER, message_id.encode())]
    try:
        probe_kafka(bootstrap_servers(common))
        producer = kafka_producer(common, tuning, client_id="waitroom-cli")
    except Exception as exc:  # KafkaUnreachable, or kafka-python's own errors
        return f"cannot reach Kafka at {common.kafka_bootstrap_servers}: {exc}"
    try:
        record = (TOPIC, message.key, message.value, headers)
        send_and_wait(producer, [record], tuning.request_timeout_ms / 1000)
    except Exception as exc:
        return f"Kafka did not acknowledge it: {exc}"
    finally:
        producer.close(timeout=5)
    return None
