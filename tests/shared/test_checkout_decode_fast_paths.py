"""The checkout decoder's fast paths give the answers of the slow ones they stand in for.

``parse_timestamp_ms`` caches the calendar work per second and adds the fraction in integers;
``decode_checkout`` decodes UTF-8 objects itself and skips the lone-surrogate check when no
byte can carry one. Each is compared here with what it replaced, on inputs chosen to break it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared.messages import BadMessage, decode_checkout
from shared.timefmt import parse_timestamp, parse_timestamp_ms

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MS = timedelta(milliseconds=1)

near_misses = st.from_regex(
    r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,12})?"
    r"( ?[Zz]|[+-][0-9]{2}:?[0-9]{2}| [+-][0-9]{4}( [A-Z+0-9-]{1,8})?( m=[+-][0-9]+\.[0-9]+)?)\Z"
)
moments = st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30), timezones=st.timezones())


def reference_ms(text: str) -> int | str:
    """Exact milliseconds of what ``parse_timestamp`` reads (floored), or its error."""
    try:
        return (parse_timestamp(text) - EPOCH) // MS
    except ValueError as exc:
        return str(exc)


def fast_ms(text: str) -> int | str:
    try:
        return parse_timestamp_ms(text)
    except ValueError as exc:
        return str(exc)


@settings(max_examples=400, deadline=None)
@given(near_misses | moments.map(datetime.isoformat) | st.text(max_size=40))
@example("1969-12-31T23:59:59.9995Z")  # before 1970: floored, as the reference
@example("2025-02-30T10:00:00Z")
@example("9999-12-31T23:59:59-23:59")
def test_timestamp_ms_is_the_reference_parse_to_the_millisecond(text: str) -> None:
    assert fast_ms(text) == reference_ms(text)


def test_times_in_one_second_share_the_cache_and_keep_their_own_fraction() -> None:
    base = parse_timestamp_ms("2026-11-26T17:41:39Z")
    for ms in range(0, 1000, 7):
        assert parse_timestamp_ms(f"2026-11-26T17:41:39.{ms:03d}Z") == base + ms
        go = f"2026-11-27 00:41:39.{ms:03d}456789 +0700 +07 m=+1.5"
        assert parse_timestamp_ms(go) == base + ms


ids = st.text(st.characters(exclude_categories=()) | st.characters(categories=["Cs"]))


@settings(max_examples=300, deadline=None)
@given(ids, st.sampled_from(["ascii", "utf-8", "utf-16", "utf-32", "spaced"]))
@example("\ud800", "utf-8")
@example("\udfff", "utf-16")
@example("a\ud83d", "spaced")
@example("\ud800\udc00", "ascii")  # a pair: one character, not lone
@example("\ud800\udc00", "utf-8")  # each half encoded alone: two lone ones
def test_a_lone_surrogate_is_refused_however_the_json_carries_it(sid: str, form: str) -> None:
    body = {"session_id": sid, "user_id": "u", "event_id": "e"}
    if form == "ascii":
        value = json.dumps(body).encode()  # \ud800 escapes
    else:
        text = json.dumps(body, ensure_ascii=False)
        text = " " + text if form == "spaced" else text  # not '{"': the slow path
        value = text.encode("utf-8" if form == "spaced" else form, "surrogatepass")
    read = json.loads(value)["session_id"]  # as json.loads reads bytes (the slow path)
    lone = read.encode("utf-8", "surrogatepass") != read.encode("utf-8", "replace")
    try:
        decoded = decode_checkout("checkout.completed", value, 1 << 20)
    except BadMessage as exc:
        assert lone and "lone surrogate" in str(exc)
        return
    assert not lone
    assert decoded.session_id == read


@pytest.mark.parametrize("value", [b'{"session_id": "\xed\x9f\xbf"}', b'{"session_id": "\xed"}'])
def test_bytes_near_a_surrogate_are_read_as_json_loads_reads_them(value: bytes) -> None:
    try:
        expected: str | None = json.loads(value)["session_id"]
    except ValueError:
        expected = None
    try:
        got: str | None = decode_checkout("checkout.completed", value, 1024).session_id
    except BadMessage:
        got = None
    assert got == expected
