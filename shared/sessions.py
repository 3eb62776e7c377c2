"""The session record stored in an event's ``sessions`` hash (written only by Lua scripts)."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from shared.settings import ConsumerSettings


class Status(enum.IntEnum):
    """The contract's SessionStatus numbers (``waitroom.v1.SessionStatus``)."""

    UNSPECIFIED = 0
    QUEUED = 1
    PROCESSING = 2
    READY = 3
    ACTIVE = 4
    COMPLETED = 5
    FAILED = 6
    EXPIRED = 7
    CANCELLED = 8

    @property
    def terminal(self) -> bool:
        return self in (Status.COMPLETED, Status.FAILED, Status.EXPIRED, Status.CANCELLED)


@dataclass(frozen=True)
class SessionRecord:
    """Mirror of the JSON array documented in ``shared/lua/event_lib.lua`` (the ticket is the
    record's key in the sessions hash, not part of the array)."""

    status: Status
    user_id: str
    ticket: int
    queued_ms: int
    expires_ms: int
    admitted_ms: int
    checkout_deadline_ms: int
    finished_ms: int
    reason: str

    @classmethod
    def decode(cls, raw: bytes | str, ticket: int) -> SessionRecord:
        """Decode a record; fields 6..9 are absent while the session waits."""
        v = json.loads(raw)
        v += [0] * (9 - len(v))
        return cls(
            status=Status(int(v[0])),
            user_id=str(v[1]),
            ticket=ticket,
            queued_ms=int(v[3]),
            expires_ms=int(v[4]),
            admitted_ms=int(v[5]),
            checkout_deadline_ms=int(v[6]),
            finished_ms=int(v[7]),
            reason=str(v[8] or ""),
        )

    def queue_expired(self, now_ms: int) -> bool:
        """A queued session whose lifetime ran out (the admitter will close it as EXPIRED)."""
        return self.status is Status.QUEUED and now_ms >= self.expires_ms


def checkout_outcomes(settings: ConsumerSettings) -> dict[str, tuple[Status, str]]:
    """Checkout topic (configurable names) -> the final status and reason word ``finish``
    records: one mapping for the consumer that applies outcomes and the recovery that replays
    them."""
    return {
        settings.topic_completed: (Status.COMPLETED, "completed"),
        settings.topic_failed: (Status.FAILED, "failed"),
        settings.topic_expired: (Status.EXPIRED, "expired"),
    }
