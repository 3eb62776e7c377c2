"""Kafka topics and the JSON codecs for every message in the contract.

Every message is JSON keyed by ``event_id``; the topic is the type. Messages we produce also
carry ``message_id`` (session id plus kind, stable across re-sends) for deduplication, in the
JSON and as a header; that is an addition the contract allows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shared.timefmt import format_ms_precise, parse_timestamp

QUEUE_JOINED = "queue.joined"
QUEUE_LEFT = "queue.left"
QUEUE_READY = "queue.ready"
CHECKOUT_COMPLETED = "checkout.completed"
CHECKOUT_FAILED = "checkout.failed"
CHECKOUT_EXPIRED = "checkout.expired"
PRODUCED_TOPICS = (QUEUE_JOINED, QUEUE_LEFT, QUEUE_READY)
CHECKOUT_TOPICS = (CHECKOUT_COMPLETED, CHECKOUT_FAILED, CHECKOUT_EXPIRED)
MESSAGE_ID_HEADER = "message_id"
# One encoder: json.dumps with non-default options builds a new one on every call.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class OutgoingMessage:
    """A message ready to produce: topic, key, value bytes and its stable id."""

    topic: str
    key: bytes
    value: bytes
    message_id: str


def encode(topic: str, event_id: str, message_id: str, fields: dict[str, Any]) -> OutgoingMessage:
    body = {**fields, "message_id": message_id}
    value = _JSON.encode(body).encode("utf-8")
    return OutgoingMessage(topic, event_id.encode("utf-8"), value, message_id)


def queue_joined(
    session_id: str, user_id: str, event_id: str, position: int, joined_ms: int, now_ms: int
) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "user_id": user_id,
        "event_id": event_id,
        "position": position,
        "joined_at": format_ms_precise(joined_ms),
        "timestamp": format_ms_precise(now_ms),
    }


def queue_left(
    session_id: str, user_id: str, event_id: str, reason: str, left_ms: int, now_ms: int
) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "user_id": user_id,
        "event_id": event_id,
        "reason": reason,
        "left_at": format_ms_precise(left_ms),
        "timestamp": format_ms_precise(now_ms),
    }


def queue_ready(
    session_id: str,
    user_id: str,
    event_id: str,
    checkout_token: str,
    admitted_ms: int,
    expires_ms: int,
    now_ms: int,
) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "user_id": user_id,
        "event_id": event_id,
        "checkout_token": checkout_token,
        "admitted_at": format_ms_precise(admitted_ms),
        "expires_at": format_ms_precise(expires_ms),
        "timestamp": format_ms_precise(now_ms),
    }


class BadMessage(ValueError):
    """A checkout message that cannot be handled; the reason goes to the dead-letter topic."""


@dataclass(frozen=True)
class CheckoutOutcome:
    """A decoded ``checkout.completed|failed|expired`` message."""

    topic: str
    session_id: str
    user_id: str
    event_id: str
    timestamp_ms: int | None


def _optional_str(data: dict[str, Any], name: str) -> str:
    value = data.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadMessage(f"field {name!r} must be a string, got {type(value).__name__}")
    return value


def decode_checkout(topic: str, value: bytes | None, max_bytes: int) -> CheckoutOutcome:
    """Decode a checkout message strictly enough to act on it; raise BadMessage otherwise.

    ``timestamp`` may be RFC 3339 or Go's ``time.Now().String()``; an unreadable timestamp is a
    bad message, since a producer sending one is broken in a way someone must see.
    """
    if value is None:
        raise BadMessage("empty message (tombstone)")
    if len(value) > max_bytes:
        raise BadMessage(f"message is {len(value)} bytes; at most {max_bytes}")
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadMessage(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadMessage(f"not a JSON object: {type(data).__name__}")
    session_id = _optional_str(data, "session_id")
    if not session_id:
        raise BadMessage("missing session_id")
    timestamp = _optional_str(data, "timestamp")
    timestamp_ms = None
    if timestamp:
        try:
            timestamp_ms = int(parse_timestamp(timestamp).timestamp() * 1000)
        except ValueError as exc:
            raise BadMessage(str(exc)) from None
    return CheckoutOutcome(
        topic=topic,
        session_id=session_id,
        user_id=_optional_str(data, "user_id"),
        event_id=_optional_str(data, "event_id"),
        timestamp_ms=timestamp_ms,
    )


def checkout_message(
    topic: str, session_id: str, user_id: str, event_id: str, now_ms: int
) -> dict[str, Any]:
    """A checkout outcome as the order service sends it (for operators and tests)."""
    body: dict[str, Any] = {
        "session_id": session_id,
        "user_id": user_id,
        "event_id": event_id,
        "timestamp": format_ms_precise(now_ms),
    }
    if topic == CHECKOUT_EXPIRED:
        body["expired_at"] = format_ms_precise(now_ms)
    return body
