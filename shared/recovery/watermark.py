"""Watermarks: what Kafka holds of each event, and whether Redis went back in time.

With every batch it relays, the admitter's relay also writes the event's watermark to
``waitroom.events`` (compacted, keyed by event id) in the same acknowledged send: the last outbox
record id Kafka now holds, the highest ticket joined and admitted there, the ticket counter when
the batch was read (tickets issued by then), the Redis run id it read them from, and the event's
config (so an empty Redis can get it back). A Redis whose state is behind its watermark lost
something Kafka has: see ``regression``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from shared.scripts import Probe


def stream_id(text: str) -> tuple[int, int]:
    """A stream record id (``ms-seq``) as a comparable pair; ``(0, 0)`` for '' or junk."""
    ms, _, seq = text.partition("-")
    try:
        return int(ms), int(seq or "0")
    except ValueError:
        return 0, 0


@dataclass(frozen=True)
class Watermark:
    """One event's latest state on Kafka (see the module docstring)."""

    event_id: str
    generation: str = ""
    relayed_id: str = "0-0"
    issued: int = 0
    max_ticket: int = 0
    max_admitted: int = 0
    config: dict[str, str] = field(default_factory=dict)
    written_ms: int = 0

    def advanced(self, newer: Watermark) -> Watermark:
        """This watermark moved forward by ``newer``: counters never go back, so a relay
        that read a lagging watermark, or an out-of-date writer, cannot lower them."""
        return Watermark(
            event_id=self.event_id,
            generation=newer.generation or self.generation,
            relayed_id=max(self.relayed_id, newer.relayed_id, key=stream_id),
            issued=max(self.issued, newer.issued),
            max_ticket=max(self.max_ticket, newer.max_ticket),
            max_admitted=max(self.max_admitted, newer.max_admitted),
            config=newer.config or self.config,
            written_ms=max(self.written_ms, newer.written_ms),
        )

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def decode(cls, value: bytes) -> Watermark:
        """Raises ValueError for anything that is not a watermark."""
        data: Any = json.loads(value)
        if not isinstance(data, dict) or not isinstance(data.get("event_id"), str):
            raise ValueError("not a watermark")
        config = data.get("config") or {}
        if not isinstance(config, dict):
            raise ValueError("watermark config is not an object")
        return cls(
            event_id=data["event_id"],
            generation=str(data.get("generation", "")),
            relayed_id=str(data.get("relayed_id", "0-0")),
            issued=int(data.get("issued", 0)),
            max_ticket=int(data.get("max_ticket", 0)),
            max_admitted=int(data.get("max_admitted", 0)),
            config={str(k): str(v) for k, v in config.items()},
            written_ms=int(data.get("written_ms", 0)),
        )


#: Config fields that describe the event; the rest (recovery's own) are not carried over.
_RECOVERY_FIELDS = ("generation", "recovery", "recovery_from", "recovered_through")


def event_config(config: dict[str, str]) -> dict[str, str]:
    """The fields of a config hash worth keeping in a watermark."""
    return {k: v for k, v in config.items() if k not in _RECOVERY_FIELDS}


def regression(probe: Probe, mark: Watermark | None) -> str | None:
    """Why Redis's state of the event is behind what Kafka holds, or None when it is not.

    Only a Redis server that restarted or failed over can have gone back in time: a watermark
    written from this very server (same run id) is never ahead of it, and an event whose config
    was deleted on the same server was deleted on purpose. Otherwise Redis is behind when it
    lost the config, has a ticket counter below a ticket on Kafka, a queue head at or below a
    ticket Kafka saw admitted, or never held the last outbox record Kafka acknowledged.

    Held means: still in the outbox (its highest id ever, ``last_id``), relayed and deleted
    (the highest deleted id, which only the relay moves, once Kafka has the record), or covered
    by a recovery. A promoted replica that had every write but the relay's last ``XDEL`` (the
    master died between Kafka's acknowledgement and the deletion reaching the replica; seen in
    most Sentinel failovers of tests/infra) lost nothing: the records are relayed again with
    their ``message_id``, as after any relay failure. Counting only deletions called that
    replica behind Kafka, paged the operator and rebuilt the event, skipping the ticket
    margin. A replica that missed the record itself did lose the write that made it (each
    script writes its state and its record together), and is still behind.
    """
    if mark is None or mark.generation == probe.run_id:
        return None
    if not probe.config:
        return "Redis has no state for the event (restarted empty?) but Kafka has"
    if probe.seq < mark.max_ticket:
        return (
            f"the ticket counter is {probe.seq} but Kafka holds a join with ticket "
            f"{mark.max_ticket}"
        )
    if probe.head <= mark.max_admitted:
        return (
            f"the queue head is {probe.head} but Kafka holds the admission of ticket "
            f"{mark.max_admitted}"
        )
    held = max(probe.max_deleted_id, probe.recovered_through, probe.last_id, key=stream_id)
    if stream_id(held) < stream_id(mark.relayed_id):
        return (
            f"Kafka acknowledged outbox record {mark.relayed_id} but Redis never held a record "
            f"past {held}"
        )
    return None
