"""Every session of an event as the topics tell it: joins, admissions, departures, outcomes.

Folding is order-free and idempotent: re-sent messages (the relay delivers at least once) and
messages read in any partition order give the same facts, because each fact keeps the earliest
version (an admission's first token, a session's first ending).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from shared import messages
from shared.errors import WaitroomError
from shared.ids import event_of_session
from shared.recovery.reader import Record
from shared.recovery.watermark import Watermark
from shared.sessions import Status, checkout_outcomes
from shared.settings import ConsumerSettings
from shared.timefmt import parse_timestamp


@dataclass(frozen=True)
class Ending:
    """How and when a session finished."""

    status: Status
    reason: str
    at_ms: int


@dataclass
class SessionFacts:
    """One session as Kafka knows it; ``None`` for what Kafka has not heard of."""

    session_id: str
    ticket: int
    nonce: str
    user_id: str = ""
    joined_ms: int | None = None
    admitted_ms: int | None = None
    deadline_ms: int | None = None
    left: Ending | None = None
    outcome: Ending | None = None

    def take_ending(self, ending: Ending, outcome: bool) -> None:
        current = self.outcome if outcome else self.left
        if current is None or ending.at_ms < current.at_ms:
            if outcome:
                self.outcome = ending
            else:
                self.left = ending


@dataclass
class EventHistory:
    """An event's sessions by ticket, and what was read for it."""

    event_id: str
    sessions: dict[int, SessionFacts] = field(default_factory=dict)
    messages: int = 0
    unreadable: int = 0
    foreign: int = 0  # a session id of this event whose nonce differs from the ticket's first

    @property
    def max_ticket(self) -> int:
        return max(self.sessions, default=0)

    def watermark(self) -> Watermark | None:
        """What the history alone says Kafka holds (for events whose relay wrote no watermark
        yet); None when it holds nothing."""
        if not self.sessions:
            return None
        admitted = [t for t, f in self.sessions.items() if f.admitted_ms is not None]
        return Watermark(
            self.event_id, max_ticket=self.max_ticket, max_admitted=max(admitted, default=0)
        )


def left_status(reason: str) -> Status:
    """The final status a ``queue.left`` reason stands for (the scripts' ``finish_left``)."""
    return Status.EXPIRED if reason.endswith("expired") else Status.CANCELLED


def outcome_topics(settings: ConsumerSettings) -> dict[str, Ending]:
    """Checkout topic -> the status and reason ``finish`` records (as the consumer applies
    them, ``waitroom_consumer.handler.outcomes``); ``at_ms`` is filled in per message."""
    return {topic: Ending(*done, 0) for topic, done in checkout_outcomes(settings).items()}


def _ms(value: Any, fallback: int) -> int:
    if isinstance(value, str) and value:
        try:
            return int(parse_timestamp(value).timestamp() * 1000)
        except ValueError:
            pass
    return fallback


class HistoryReader:
    """Folds records of the queue and checkout topics into the histories of chosen events
    (every event when ``events`` is None), and collects watermarks from ``waitroom.events``."""

    def __init__(self, consumer: ConsumerSettings, events: set[str] | None) -> None:
        self.events = events
        self.keys = None if events is None else {e.encode("utf-8") for e in events}
        self.outcomes = outcome_topics(consumer)
        self.histories: dict[str, EventHistory] = {}
        self.watermarks: dict[str, Watermark] = {}

    @property
    def topics(self) -> list[str]:
        return [*messages.PRODUCED_TOPICS, *self.outcomes, messages.EVENTS_TOPIC]

    def wanted(self, event_id: str) -> bool:
        return self.events is None or event_id in self.events

    def take(self, record: Record) -> None:
        """Fold one record in; anything unreadable is counted, never raised."""
        if record.topic == messages.EVENTS_TOPIC:
            self._take_watermark(record)
            return
        # Our own topics are keyed by event id: most records are skipped before parsing.
        own = record.topic in messages.PRODUCED_TOPICS
        if own and self.keys is not None and record.key not in self.keys:
            return
        try:
            body = json.loads(record.value or b"")
            session_id = body["session_id"]
            event_id = event_of_session(session_id)
            nonce, ticket_text, _ = session_id.split(".")
            ticket = int(ticket_text)
        except (ValueError, KeyError, TypeError, AttributeError, WaitroomError):
            keyed = record.key.decode("utf-8", "replace") if own and record.key else ""
            if keyed and self.wanted(keyed):
                self._history(keyed).unreadable += 1
            return
        if not self.wanted(event_id):
            return
        history = self._history(event_id)
        history.messages += 1
        facts = history.sessions.get(ticket)
        if facts is None:
            facts = history.sessions[ticket] = SessionFacts(session_id, ticket, nonce)
        elif facts.nonce != nonce:
            history.foreign += 1
            return
        self._fold(facts, record, body)

    def _fold(self, facts: SessionFacts, record: Record, body: dict[str, Any]) -> None:
        at = record.timestamp_ms
        user = body.get("user_id")
        # Our own messages name the user; a checkout message's user_id is the order service's
        # and counts only when nothing else named one.
        own = record.topic in messages.PRODUCED_TOPICS
        if isinstance(user, str) and user and (own or not facts.user_id):
            facts.user_id = user
        if record.topic == messages.QUEUE_JOINED:
            joined = _ms(body.get("joined_at"), at)
            facts.joined_ms = joined if facts.joined_ms is None else min(facts.joined_ms, joined)
        elif record.topic == messages.QUEUE_READY:
            admitted = _ms(body.get("admitted_at"), at)
            if facts.admitted_ms is None or admitted < facts.admitted_ms:
                facts.admitted_ms = admitted
                facts.deadline_ms = _ms(body.get("expires_at"), admitted)
        elif record.topic == messages.QUEUE_LEFT:
            reason = str(body.get("reason") or "left")
            ending = Ending(left_status(reason), reason, _ms(body.get("left_at"), at))
            facts.take_ending(ending, False)
        else:
            kind = self.outcomes[record.topic]
            ending = Ending(kind.status, kind.reason, _ms(body.get("timestamp"), at))
            facts.take_ending(ending, True)

    def _take_watermark(self, record: Record) -> None:
        try:
            mark = Watermark.decode(record.value or b"")
        except (ValueError, TypeError):
            return
        if not self.wanted(mark.event_id):
            return
        known = self.watermarks.get(mark.event_id)
        self.watermarks[mark.event_id] = mark if known is None else known.advanced(mark)

    def _history(self, event_id: str) -> EventHistory:
        history = self.histories.get(event_id)
        if history is None:
            history = self.histories[event_id] = EventHistory(event_id)
        return history
