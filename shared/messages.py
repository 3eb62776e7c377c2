"""Kafka topics and the JSON codecs for every message in the contract.

Every message is JSON keyed by ``event_id``; the topic is the type. Messages we produce also
carry ``message_id`` (session id plus kind, stable across re-sends) for deduplication, in the
JSON and as a header; that is an addition the contract allows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from shared.draw import SCHEME
from shared.timefmt import format_ms_precise, parse_timestamp_ms

QUEUE_JOINED = "queue.joined"
QUEUE_LEFT = "queue.left"
QUEUE_READY = "queue.ready"
CHECKOUT_COMPLETED = "checkout.completed"
CHECKOUT_FAILED = "checkout.failed"
CHECKOUT_EXPIRED = "checkout.expired"
#: Operators' changes to events (``shared.audit``), relayed from the outbox like the rest.
WAITROOM_AUDIT = "waitroom.audit"
#: A scheduled opening's draw: the seed's commitment when the opening is set, the seed when the
#: draw is done (docs/architecture.md, "The draw"); keyed by event id like every message.
WAITROOM_DRAWS = "waitroom.draws"
PRODUCED_TOPICS = (QUEUE_JOINED, QUEUE_LEFT, QUEUE_READY, WAITROOM_AUDIT, WAITROOM_DRAWS)
#: Every ``queue.left`` reason: the user left, a lifetime ran out, or (idle timeout) the user
#: was absent when the queue reached them.
LEFT_REASONS = ("user_left", "queue_expired", "checkout_expired", "abandoned")
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


def waitroom_draw(fields: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """A ``waitroom.draws`` message from its outbox record (draw_schedule.lua, draw_finish.lua).

    ``committed``: ``commitment`` (SHA-256 of the seed, hex) and ``opens_at``; ``revealed``
    adds ``seed`` (hex), ``entrants`` (tickets 1..n were drawn) and ``drawn_at``. ``scheme``
    names the shuffle (``shared.draw.SCHEME``) so anyone can recompute the places.
    """
    kind = str(fields["kind"])
    if kind not in ("committed", "revealed"):
        raise ValueError(f"unknown draw message kind {kind!r}")
    body: dict[str, Any] = {
        "event_id": str(fields["event_id"]),
        "kind": kind,
        "scheme": SCHEME,
        "commitment": str(fields["commitment"]),
        "opens_at": format_ms_precise(int(fields["opens_ms"])),
        "timestamp": format_ms_precise(now_ms),
    }
    if kind == "revealed":
        body["seed"] = str(fields["seed"])
        body["entrants"] = int(fields["entrants"])
        body["drawn_at"] = format_ms_precise(int(fields["drawn_ms"]))
    return body


class BadMessage(ValueError):
    """A checkout message that cannot be handled; the reason goes to the dead-letter topic."""


# Our checkout messages are flat objects; a producer may add fields, but nothing needs more than
# a few levels. The limit is checked before parsing because json.loads recurses once per level
# and a 60 KB message of nested lists exhausts Python's stack (RecursionError).
MAX_DEPTH = 16
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
_BRACKET = re.compile(rb"[\[\]{}]")


def nesting_exceeds(value: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON text opens more than ``limit`` arrays or objects inside each other.

    Linear in the input: escapes are dropped first, so every string is a plain ``"..."`` that
    one non-backtracking pattern removes; the brackets left are structure.
    """
    if value.count(b"[") + value.count(b"{") <= limit:
        return False  # the usual message: a handful of brackets cannot nest deeper
    depth = 0
    for bracket in _BRACKET.findall(_STRING.sub(b"", _ESCAPE.sub(b"", value))):
        depth += 1 if bracket in (b"[", b"{") else -1
        if depth > limit:
            return True
    return False


@dataclass(frozen=True)
class CheckoutOutcome:
    """A decoded ``checkout.completed|failed|expired`` message.

    ``session_id`` is empty when the order never went through the waitroom. ``timestamp_ms``
    is None when the message has no timestamp or one that cannot be read; then
    ``timestamp_error`` says why (the outcome still counts: the slot is freed regardless).
    """

    topic: str
    session_id: str
    user_id: str
    event_id: str
    timestamp_ms: int | None
    timestamp_error: str = ""


def _is_text(value: str) -> bool:
    """Whether a decoded JSON string is real Unicode: a ``\\ud800`` escape decodes to a lone
    surrogate, which no encoder (redis-py's included) accepts."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _id_field(data: dict[str, Any], name: str, escaped: bool = True) -> str:
    """A string field; ``escaped`` False says the JSON can hold no lone surrogate, so the
    check for one (an encode, a third of this function's time) is skipped."""
    value = data.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadMessage(f"field {name!r} must be a string, got {type(value).__name__}")
    if escaped and not _is_text(value):
        raise BadMessage(f"field {name!r} is not valid Unicode (a lone surrogate)")
    return value


def _timestamp_ms(data: dict[str, Any]) -> tuple[int | None, str]:
    """The message's time in ms, or None and why it cannot be read ("" when it is absent)."""
    value = data.get("timestamp")
    if value is None or value == "":
        return None, ""
    if not isinstance(value, str):
        return None, f"timestamp must be a string, got {type(value).__name__}"
    try:
        return parse_timestamp_ms(value), ""
    except ValueError as exc:
        return None, str(exc)


def decode_checkout(topic: str, value: bytes | None, max_bytes: int) -> CheckoutOutcome:
    """Decode a checkout message strictly enough to act on it.

    ``timestamp`` may be RFC 3339 or Go's ``time.Now().String()``. One that cannot be read does
    not make the message bad: the outcome still happened, so the caller frees the slot and
    counts it. An empty (or null) ``session_id`` is what the order service sends for orders that
    never went through the waitroom; the caller skips those.

    Raises:
        BadMessage: the message cannot be acted on (the reason says why). It is the only
            exception this raises, whatever the bytes.
    """
    if value is None:
        raise BadMessage("empty message (tombstone)")
    if len(value) > max_bytes:
        raise BadMessage(f"message is {len(value)} bytes; at most {max_bytes}")
    if nesting_exceeds(value):
        raise BadMessage(f"JSON nested deeper than {MAX_DEPTH} levels")
    utf8 = value[:2] == b'{"'
    try:
        # json.loads(bytes) first guesses the encoding (UTF-8, -16 or -32): a third of its
        # time. An object that opens with '{"' is UTF-8 by that same rule, decoded as it does.
        data = json.loads(value.decode("utf-8", "surrogatepass") if utf8 else value)
    except ValueError as exc:
        # ValueError, not just JSONDecodeError: an integer of more than 4,300 digits is refused
        # by int() with a plain ValueError, and bytes that are not UTF-8 raise UnicodeDecodeError.
        raise BadMessage(f"not JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise BadMessage(f"not a JSON object: {type(data).__name__}")
    if "session_id" not in data:
        raise BadMessage("missing session_id")
    timestamp_ms, timestamp_error = _timestamp_ms(data)
    # A lone surrogate comes from a \u escape or, as json.loads decodes "surrogatepass", from
    # its encoded form: in UTF-8 a lead byte 0xED; in UTF-16 or -32, no byte tells.
    escaped = not utf8 or b"\\u" in value or b"\xed" in value
    return CheckoutOutcome(
        topic=topic,
        session_id=_id_field(data, "session_id", escaped),
        user_id=_id_field(data, "user_id", escaped),
        event_id=_id_field(data, "event_id", escaped),
        timestamp_ms=timestamp_ms,
        timestamp_error=timestamp_error,
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


def audit_message(fields: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """``waitroom.audit``: an operator's change to an event, as ``event_save.lua`` recorded
    it (``changes`` maps each field to ``[old, new]``; old is null on create)."""
    return {
        "event_id": str(fields["event_id"]),
        "action": str(fields["action"]),
        "by": str(fields["by"]),
        "host": str(fields["host"]),
        "changes": fields.get("changes") or {},
        "at": format_ms_precise(int(fields["at_ms"])),
        "timestamp": format_ms_precise(now_ms),
    }


#: Compacted topic keyed by event id: each event's latest watermark (what Kafka holds of it and
#: its configuration), written by the relay with every batch; recovery reads it
#: (``shared.recovery``, docs/reliability.md).
EVENTS_TOPIC = "waitroom.events"
