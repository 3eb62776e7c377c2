"""Identifiers: validation of caller-supplied ids and the session id format.

A session id is ``<nonce>.<ticket>.<base64url(event_id)>``: the nonce is 128 random bits (22
url-safe characters), so ids are unguessable; the ticket locates the record; the suffix names the
event, so every lookup goes straight to that event's Redis hash slot (no global index, so it stays
cluster-safe). The join script assembles the id once it has drawn the ticket.
"""

from __future__ import annotations

import base64
import binascii
import secrets

from shared.errors import Code, WaitroomError

MAX_ID_LENGTH = 128
_RANDOM_PART = 22  # 16 bytes, base64url without padding
# nonce . ticket (at most 20 digits) . base64url of an event id of 128 characters of up to 4
# UTF-8 bytes each.
MAX_SESSION_ID_LENGTH = _RANDOM_PART + 1 + 20 + 1 + -(-4 * MAX_ID_LENGTH * 4 // 3)


def validate_id(name: str, value: str) -> str:
    """Return ``value`` if it is a usable id, else raise INVALID_ARGUMENT naming the field."""
    if not value:
        raise WaitroomError(Code.INVALID_INPUT, f"{name} is required")
    if len(value) > MAX_ID_LENGTH:
        raise WaitroomError(
            Code.INVALID_INPUT, f"{name} is {len(value)} characters; at most {MAX_ID_LENGTH}"
        )
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise WaitroomError(Code.INVALID_INPUT, f"{name} contains a control character")
    return value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def new_nonce() -> str:
    """The random part of a new session id."""
    return _b64(secrets.token_bytes(16))


def event_suffix(event_id: str) -> str:
    """The last part of every session id of ``event_id``."""
    return _b64(event_id.encode("utf-8"))


def ticket_of_session(session_id: str) -> int:
    """The ticket inside a session id (call ``event_of_session`` first to validate it)."""
    return int(session_id.split(".")[1])


def event_of_session(session_id: str) -> str:
    """The event a session id belongs to; WTR001 if it cannot be one of ours."""
    if not session_id:
        raise WaitroomError(Code.INVALID_INPUT, "session_id is required")
    if len(session_id) > MAX_SESSION_ID_LENGTH:
        raise WaitroomError(Code.SESSION_NOT_FOUND, "session not found")
    parts = session_id.split(".")
    if len(parts) != 3 or len(parts[0]) != _RANDOM_PART or not parts[1].isdigit():
        raise WaitroomError(Code.SESSION_NOT_FOUND, "session not found")
    encoded = parts[2]
    if not encoded:
        raise WaitroomError(Code.SESSION_NOT_FOUND, "session not found")
    try:
        event_id = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise WaitroomError(Code.SESSION_NOT_FOUND, "session not found") from None
    if not event_id or len(event_id) > MAX_ID_LENGTH:
        raise WaitroomError(Code.SESSION_NOT_FOUND, "session not found")
    return event_id
