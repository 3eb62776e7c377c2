"""Fuzzing the checkout decoder: whatever the bytes, it decodes or says why, and nothing else.

Every input a producer can send reaches ``decode_checkout``; an exception other than BadMessage
used to end the consumer (RecursionError, OverflowError, a plain ValueError), so the property
is checked on arbitrary bytes, arbitrary JSON, deep nesting, extreme numbers and dates, and
text from every Unicode category, lone surrogates included.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared import messages
from shared.messages import MAX_DEPTH, BadMessage, CheckoutOutcome, decode_checkout

MAX_BYTES = 64 * 1024
FUZZ = settings(max_examples=200, deadline=None)

# Every Unicode category; lone surrogates (Cs, which JSON's \ud800 escape produces) are drawn
# often on purpose: among all code points they are too rare for the search to meet them.
any_char = st.characters(exclude_categories=()) | st.characters(categories=["Cs"])
any_text = st.text(any_char, max_size=40)
# Integers of hundreds of digits; beyond 4,300 json.dumps itself refuses, so the bytes
# example below sends those raw.
extreme_numbers = st.integers(min_value=-(10**400), max_value=10**400) | st.floats(
    allow_nan=True, allow_infinity=True
)
json_values = st.recursive(
    st.none() | st.booleans() | extreme_numbers | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)
# Near-miss timestamps: the layouts we accept with any digits in them (years 0000 and 9999,
# month 13, offsets of 99 hours), plus Go's suffixes.
timestamps = (
    st.from_regex(
        r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
        r"( ?Z|[+-][0-9]{2}:?[0-9]{2}| [+-][0-9]{4}( [A-Z+0-9-]{1,8})?( m=[+-][0-9]+\.[0-9]+)?)\Z"
    )
    | any_text
)


def check(value: bytes | None) -> CheckoutOutcome | None:
    """Decode; the only exception allowed is BadMessage, and what decodes is usable."""
    try:
        decoded = decode_checkout(messages.CHECKOUT_COMPLETED, value, MAX_BYTES)
    except BadMessage as exc:
        assert str(exc)  # always a reason
        return None
    for text in (decoded.session_id, decoded.user_id, decoded.event_id):
        text.encode("utf-8")  # what Redis and the logs will be given must encode
    assert decoded.timestamp_ms is None or isinstance(decoded.timestamp_ms, int)
    assert not (decoded.timestamp_ms is not None and decoded.timestamp_error)
    return decoded


def dumps(value: Any) -> bytes:
    # ensure_ascii (the default) writes lone surrogates as \ud800 escapes, as a buggy producer
    # would; allow_nan lets NaN and Infinity through, as Python's own producers do.
    return json.dumps(value).encode()


@FUZZ
@given(st.binary(max_size=2048))
@example(b"\xed\xa0\x80")  # a UTF-8-encoded surrogate
@example(b'{"session_id": "s", "n": ' + b"1" * 5000 + b"}")  # int() refuses > 4,300 digits
def test_arbitrary_bytes_decode_or_are_refused_with_a_reason(value: bytes) -> None:
    check(value)


@FUZZ
@given(json_values)
def test_arbitrary_json_decodes_or_is_refused_with_a_reason(value: Any) -> None:
    check(dumps(value))


@FUZZ
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "session_id": json_values,
            "user_id": json_values,
            "event_id": json_values,
            "timestamp": json_values | timestamps,
            "expired_at": json_values,
        },
    )
)
@example({"session_id": "\ud800" * 22 + ".1.ZXY"})  # our id's shape, a surrogate nonce
def test_arbitrary_fields_in_a_checkout_shaped_object(body: dict[str, Any]) -> None:
    decoded = check(dumps(body))
    if decoded is not None:
        assert "session_id" in body


@FUZZ
@given(field=st.sampled_from(["session_id", "user_id", "event_id"]), text=any_text)
def test_ids_of_any_text_decode_to_encodable_text_or_are_refused(field: str, text: str) -> None:
    check(dumps({"session_id": "s", field: text}))


@FUZZ
@given(
    depth=st.integers(min_value=MAX_DEPTH + 1, max_value=40_000),
    opener=st.sampled_from([b"[", b'{"a":']),
    inside=st.sampled_from(["whole", "session_id", "extra"]),
)
@example(depth=30_000, opener=b"[", inside="whole")  # the 60 KB message from the incident
@example(depth=9_000, opener=b'{"a":', inside="session_id")
def test_deep_nesting_is_refused_before_it_reaches_the_parser(
    depth: int, opener: bytes, inside: str
) -> None:
    closer = b"]" if opener == b"[" else b"}"
    nested = opener * depth + b"1" + closer * depth
    value = {
        "whole": nested,
        "session_id": b'{"session_id":' + nested + b"}",
        "extra": b'{"session_id":"s","meta":' + nested + b"}",
    }[inside]
    if len(value) > MAX_BYTES:
        value = value[:MAX_BYTES]  # still deep; now also unterminated
    try:
        decode_checkout(messages.CHECKOUT_COMPLETED, value, MAX_BYTES)
    except BadMessage as exc:
        assert "nested deeper" in str(exc) or "not JSON" in str(exc)
    else:
        raise AssertionError("a message nested this deep was accepted")


@given(st.integers(min_value=0, max_value=MAX_DEPTH - 1), st.text(any_char, max_size=20))
@settings(max_examples=100, deadline=None)
def test_nesting_within_the_limit_is_accepted_whatever_brackets_strings_hold(
    depth: int, text: str
) -> None:
    # Brackets inside strings (escaped quotes included) are not structure; the object itself
    # is one level, so this is exactly MAX_DEPTH deep at most.
    noise = json.dumps('"[{' + text + "[[[\\")
    body = f'{{"session_id":"s","meta":{"[" * depth}{noise}{"]" * depth}}}'.encode()
    assert not messages.nesting_exceeds(body)
    decoded = check(body)
    assert decoded is not None and decoded.session_id == "s"


@FUZZ
@given(timestamps)
@example("9999-12-31T23:59:59-23:59")
@example("0001-01-01T00:00:00+23:59")
def test_any_timestamp_leaves_the_message_usable(timestamp: str) -> None:
    decoded = check(dumps({"session_id": "s", "timestamp": timestamp}))
    assert decoded is not None and decoded.session_id == "s"
    if timestamp:  # present: either read or said why not
        assert (decoded.timestamp_ms is None) == bool(decoded.timestamp_error)
