"""Session records as the contract's messages: what a client sees of one session right now.

Shared by GetQueueStatus and the position streams so both always agree on a session's state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import quote

from shared import token
from shared.errors import Code, WaitroomError
from shared.proto import waitroom_pb2 as pb
from shared.scripts import SessionView
from shared.sessions import SessionRecord, Status
from shared.timefmt import format_ms


def fill_url(template: str, event_id: str, session_id: str) -> str:
    """``template`` with ``{event_id}`` and ``{session_id}`` filled in, URL-escaped.

    Plain replacement rather than ``str.format``, so other braces in an operator's template
    are left alone instead of failing every request.
    """
    if not template:
        return ""
    return template.replace("{event_id}", quote(event_id, safe="")).replace(
        "{session_id}", quote(session_id, safe="")
    )


@lru_cache(maxsize=16)
def updated_at(now_ms: int) -> str:
    """``format_ms`` of a read's time; every stream offered one read shares it, so a pass over
    10,000 streams formats it once instead of 10,000 times."""
    return format_ms(now_ms)


class SessionState(NamedTuple):
    """A session as a client sees it: queued sessions past their lifetime count as EXPIRED
    (the record itself is closed later by the admitter).

    A named tuple rather than a frozen dataclass: a pass over 10,000 streams builds 10,000 of
    them, and a frozen dataclass costs several times as much to build.
    """

    session_id: str
    event_id: str
    record: SessionRecord
    status: Status
    position: int
    queue_length: int
    now_ms: int
    opens_ms: int = 0  # the event's scheduled opening; 0: none
    rate: float = 0.0  # admissions per second to estimate the wait with

    @property
    def estimated_wait_seconds(self) -> int:
        return estimated_wait_seconds(
            self.status, self.position, self.queue_length, self.now_ms, self.opens_ms, self.rate
        )

    @property
    def key(self) -> tuple[Status, int]:
        """What a stream reports a change of."""
        return self.status, self.position


def estimated_wait_seconds(
    status: Status, position: int, queue_length: int, now_ms: int, opens_ms: int, rate: float
) -> int:
    """Seconds until a session is admitted, at ``rate`` admissions per second (the event's
    measured rate, see admit.lua): 0 unless it waits.

    A pre-queue session (position 0 before the draw) waits for the opening and then, on
    average, for half the pre-queue.
    """
    if status is not Status.QUEUED or rate <= 0:
        return 0
    if position > 0:
        return math.ceil(position / rate)
    if not opens_ms:
        return 0
    return math.ceil(max(0, opens_ms - now_ms) / 1000 + (queue_length + 1) / 2 / rate)


def session_state(
    event_id: str,
    view: SessionView,
    queue_length: int,
    now_ms: int,
    opens_ms: int = 0,
    rate: float = 0.0,
) -> SessionState:
    """The state of ``view``; WTR001 when the session is unknown."""
    return record_state(
        event_id, view.session_id, view.record, view.rank, queue_length, now_ms, opens_ms, rate
    )


def record_state(
    event_id: str,
    session_id: str,
    record: SessionRecord | None,
    rank: int,
    queue_length: int,
    now_ms: int,
    opens_ms: int = 0,
    rate: float = 0.0,
) -> SessionState:
    """The state of a session with ``record`` at 0-based ``rank`` (-1: not waiting) read at
    ``now_ms``; WTR001 when the session is unknown (``record`` None)."""
    if record is None:
        raise WaitroomError(Code.SESSION_NOT_FOUND, "session not found")
    status = record.status
    position = 0
    if record.queue_expired(now_ms):
        status = Status.EXPIRED
    elif status is Status.QUEUED:
        position = rank + 1 if rank >= 0 else 0
    return SessionState(
        session_id, event_id, record, status, position, queue_length, now_ms, opens_ms, rate
    )


@dataclass(frozen=True)
class Renderer:
    """Builds responses; holds what they need beyond the record (the secret, URL templates)."""

    secret: token.Signer
    checkout_url: str
    websocket_url: str

    def _checkout(self, state: SessionState) -> tuple[str, str]:
        """Token and URL for a session in checkout, else empty strings."""
        if state.status is not Status.READY:
            return "", ""
        minted = token.mint_for(self.secret, state.session_id, state.event_id, state.record)
        return minted, fill_url(self.checkout_url, state.event_id, state.session_id)

    def queue_status(self, state: SessionState) -> pb.QueueStatusResponse:
        """GetQueueStatus; WTR002 for a queued session whose lifetime ran out."""
        if state.status is Status.EXPIRED and state.record.status is Status.QUEUED:
            raise WaitroomError(Code.SESSION_EXPIRED, "session expired")
        record = state.record
        checkout_token, checkout_url = self._checkout(state)
        return pb.QueueStatusResponse(
            session_id=state.session_id,
            status=pb.SessionStatus.ValueType(int(state.status)),
            position=state.position,
            queue_length=state.queue_length,
            queued_at=format_ms(record.queued_ms),
            expires_at=format_ms(record.expires_ms),
            checkout_token=checkout_token,
            checkout_url=checkout_url,
            checkout_expires_at=format_ms(record.checkout_deadline_ms),
            admitted_at=format_ms(record.admitted_ms),
            estimated_wait_seconds=state.estimated_wait_seconds,
            opens_at=format_ms(state.opens_ms),
        )

    def position_update(self, state: SessionState) -> pb.PositionUpdate:
        checkout_token, checkout_url = self._checkout(state)
        return pb.PositionUpdate(
            session_id=state.session_id,
            position=state.position,
            queue_length=state.queue_length,
            status=pb.SessionStatus.ValueType(int(state.status)),
            updated_at=updated_at(state.now_ms),
            checkout_token=checkout_token,
            checkout_url=checkout_url,
            estimated_wait_seconds=state.estimated_wait_seconds,
            opens_at=format_ms(state.opens_ms),
        )

    def websocket(self, event_id: str, session_id: str) -> str:
        return fill_url(self.websocket_url, event_id, session_id)
