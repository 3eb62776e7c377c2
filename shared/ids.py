"""Identifiers: validation of caller-supplied ids and the session id format.

A session id is ``<nonce>.<ticket>.<base64url(event_id)>``: the nonce is 128 random bits (22
url-safe characters), so ids are unguessable; the ticket locates the record; the suffix names the
event, so every lookup goes straight to that event's Redis hash slot (no global index, so it stays
cluster-safe). The join script assembles the id once it has drawn the ticket.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import unicodedata

from shared.errors import Code, WaitroomError

MAX_ID_LENGTH = 128
_RANDOM_PART = 22  # 16 bytes, base64url without padding
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_DIGITS = re.compile(r"[0-9]{1,20}")
# nonce . ticket (at most 20 digits) . base64url of an event id of 128 characters of up to 4
# UTF-8 bytes each.
MAX_SESSION_ID_LENGTH = _RANDOM_PART + 1 + 20 + 1 + -(-4 * MAX_ID_LENGTH * 4 // 3)


#: Unicode categories no id or free-text field may hold: controls (Cc), formats (Cf: zero-width
#: characters, the BOM, bidirectional overrides that reorder what a log or a screen shows),
#: surrogates (Cs) and line and paragraph separators (Zl, Zp). Private-use (Co) and unassigned
#: (Cn) code points stay allowed: which code points are unassigned depends on the Unicode
#: version of the Python that runs, so refusing them would make an id valid on one release and
#: invalid on the next.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})

#: Categories of characters that show something: an id needs at least one of them.
_VISIBLE_CATEGORIES = frozenset("LNPS")


def refused_character(value: str) -> str | None:
    """Describe the first character of ``value`` no request field may hold, or None.

    Refused: the categories above, and every space separator (Zs) but the plain space, since
    no-break, ideographic and zero-width-looking spaces make two different ids look the same.
    """
    for ch in value:
        category = unicodedata.category(ch)
        if category in _REFUSED_CATEGORIES or (category == "Zs" and ch != " "):
            kind = "a control character" if category == "Cc" else "an invisible character"
            return f"{kind} (U+{ord(ch):04X}, {category})"
    return None


def check_characters(name: str, value: str) -> str:
    """Return ``value``, or raise WTR007 naming the field and its first refused character."""
    refused = refused_character(value)
    if refused is not None:
        raise WaitroomError(Code.INVALID_INPUT, f"{name} contains {refused}")
    return value


def validate_id(name: str, value: str) -> str:
    """Return ``value`` if it is a usable id, else raise INVALID_ARGUMENT naming the field.

    A usable id is 1 to 128 characters, holds no refused character (``refused_character``),
    and shows something: at least one letter, number, punctuation mark or symbol, so an id of
    spaces or combining marks alone cannot pose as another user's.
    """
    if not value:
        raise WaitroomError(Code.INVALID_INPUT, f"{name} is required")
    if len(value) > MAX_ID_LENGTH:
        raise WaitroomError(
            Code.INVALID_INPUT, f"{name} is {len(value)} characters; at most {MAX_ID_LENGTH}"
        )
    check_characters(name, value)
    if not any(unicodedata.category(ch)[0] in _VISIBLE_CATEGORIES for ch in value):
        raise WaitroomError(Code.INVALID_INPUT, f"{name} has no visible character")
    return value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def new_nonce() -> str:
    """The random part of a new session id (128 random bits, base64url).

    Never starting with ``-``: operators paste session ids into commands (``waitroom checkout
    complete SESSION_ID``), where a leading dash reads as an option. The first character of
    one nonce in 64 is moved from ``-`` to ``_`` (a few hundredths of a bit of entropy).
    """
    nonce = _b64(secrets.token_bytes(16))
    return "_" + nonce[1:] if nonce.startswith("-") else nonce


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
    nonce, ticket = parts[0], parts[1] if len(parts) == 3 else ""
    # ASCII only: str.isdigit() accepts digits such as "²" that int() then refuses.
    if (
        len(nonce) != _RANDOM_PART
        or not _BASE64URL.fullmatch(nonce)
        or not _DIGITS.fullmatch(ticket)
    ):
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


#: Event ids are chosen by operators and end up in Redis keys, metric labels, Kafka keys, URLs
#: and shell commands: letters, digits, dot, underscore and dash only, so none of those needs
#: quoting and no two ids look alike.
EVENT_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}")


def validate_event_id(value: str, name: str = "event_id") -> str:
    """Return ``value`` if it is a usable event id, else raise INVALID_ARGUMENT (WTR007).

    1 to 128 of ``A-Z a-z 0-9 . _ -`` (``EVENT_ID_PATTERN``).
    """
    if not value:
        raise WaitroomError(Code.INVALID_INPUT, f"{name} is required")
    if len(value) > MAX_ID_LENGTH:
        raise WaitroomError(
            Code.INVALID_INPUT, f"{name} is {len(value)} characters; at most {MAX_ID_LENGTH}"
        )
    check_characters(name, value)  # a control or invisible character is named precisely
    if not EVENT_ID_PATTERN.fullmatch(value):
        raise WaitroomError(
            Code.INVALID_INPUT,
            f"{name} {value!r} may hold only letters, digits, '.', '_' and '-'",
        )
    return value
