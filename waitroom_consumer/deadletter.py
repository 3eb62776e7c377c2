"""Dead letters: messages that cannot be handled at all, kept whole for someone to look at.

A dead letter is a JSON object on the dead-letter topic, keyed like the original, holding the
original bytes (base64, so any bytes survive), where it came from, and why it was refused.
Originals beyond ``MAX_ORIGINAL_BYTES`` keep only their head: base64 grows them by a third, and a
dead letter the broker refuses as too large would stop the consumer on that message for good.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from shared.timefmt import format_ms_precise
from waitroom_consumer.broker import Message

MAX_ORIGINAL_BYTES = 256 * 1024
MAX_REASON_CHARS = 500  # an exception's text can quote the whole input back


@dataclass(frozen=True)
class DeadLetter:
    """A consumed message and the reason it cannot be handled."""

    message: Message
    reason: str


def from_exception(message: Message, exc: BaseException) -> DeadLetter:
    """A dead letter for a message whose handling raised something nobody foresaw."""
    try:
        text = str(exc)
    except Exception:  # a broken __str__ must not take the consumer down with the message
        text = "(no message)"
    reason = f"cannot be handled: {type(exc).__name__}: {text}"
    # Escaped to ASCII: the text may quote a lone surrogate from the input, which no log stream
    # or encoder accepts.
    return DeadLetter(
        message, reason[:MAX_REASON_CHARS].encode("ascii", "backslashreplace").decode()
    )


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def encode(letter: DeadLetter, group: str, now_ms: int) -> bytes:
    """The dead-letter record's JSON bytes."""
    m = letter.message
    body: dict[str, Any] = {
        "topic": m.topic,
        "partition": m.partition,
        "offset": m.offset,
        "key": _text(m.key),
        "key_base64": _b64(m.key),
        "value_base64": _b64(None if m.value is None else m.value[:MAX_ORIGINAL_BYTES]),
        "value_bytes": None if m.value is None else len(m.value),
        "value_truncated": m.value is not None and len(m.value) > MAX_ORIGINAL_BYTES,
        "reason": letter.reason,
        "consumer_group": group,
        "time": format_ms_precise(now_ms),
    }
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def decode(value: bytes) -> dict[str, Any]:
    """Read a dead-letter record back, with the original bytes restored under ``value``."""
    body: dict[str, Any] = json.loads(value)
    raw = body.get("value_base64")
    body["value"] = None if raw is None else base64.b64decode(raw)
    return body
