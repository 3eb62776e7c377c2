from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.timefmt import format_ms, format_ms_precise, parse_timestamp


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-26T17:41:39Z", datetime(2026, 11, 26, 17, 41, 39, tzinfo=UTC)),
        ("2026-11-26T17:41:39.123Z", datetime(2026, 11, 26, 17, 41, 39, 123000, tzinfo=UTC)),
        (
            "2026-11-26T17:41:39.123456789+07:00",
            datetime(2026, 11, 26, 10, 41, 39, 123456, tzinfo=UTC),
        ),
        ("2026-11-26T17:41:39-05:30", datetime(2026, 11, 26, 23, 11, 39, tzinfo=UTC)),
        ("2026-11-26 17:41:39Z", datetime(2026, 11, 26, 17, 41, 39, tzinfo=UTC)),
        # Go's time.Now().String(), as the order service sends on checkout.failed.
        (
            "2025-11-14 10:00:00.123456789 +0700 +07 m=+12.345678901",
            datetime(2025, 11, 14, 3, 0, 0, 123456, tzinfo=UTC),
        ),
        ("2025-11-14 10:00:00 +0000 UTC", datetime(2025, 11, 14, 10, 0, 0, tzinfo=UTC)),
        ("2025-11-14 10:00:00.5 -0300 -03", datetime(2025, 11, 14, 13, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_parses_rfc3339_and_go_layouts(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2025-13-01T00:00:00Z", "2025-11-14T10:00:00"])
def test_rejects_what_is_not_a_timestamp(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


def test_formats_rfc3339_utc() -> None:
    ms = int(datetime(2026, 11, 26, 17, 41, 39, 250000, tzinfo=UTC).timestamp() * 1000)
    assert format_ms(ms) == "2026-11-26T17:41:39Z"
    assert format_ms_precise(ms) == "2026-11-26T17:41:39.250Z"
    assert format_ms(0) == ""
    assert format_ms_precise(1) == "1970-01-01T00:00:00.001Z"
    assert format_ms_precise(253402300799999) == "9999-12-31T23:59:59.999Z"


@pytest.mark.parametrize(
    "text",
    [
        "9999-12-31T23:59:59-23:59",  # year 10000 in UTC: OverflowError before
        "0001-01-01T00:00:00+23:59",  # year 0 in UTC
        "0000-01-01T00:00:00Z",
        "2025-11-14T10:00:00+24:00",  # an offset of a whole day
        "2025-11-14 10:00:00 +9959 UTC",
        "2025-02-30T10:00:00Z",
        # Arabic-Indic digits: \d matched them and int() read them.
        "\u0662\u0660\u0662\u0665-\u0661\u0661-\u0661\u0664T10:00:00Z",
    ],
)
def test_out_of_range_times_are_refused_with_the_documented_error(text: str) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        parse_timestamp(text)


@settings(max_examples=300, deadline=None)
@given(
    st.from_regex(
        r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,12})?"
        r"( ?[Zz]|[+-][0-9]{2}:?[0-9]{2}| [+-][0-9]{4}( [A-Z+0-9-]{1,8})?( m=[+-][0-9]+\.[0-9]+)?)"
        r"\Z"
    )
    | st.text(st.characters(exclude_categories=()))
)
def test_any_string_parses_to_a_utc_time_or_raises_value_error(text: str) -> None:
    try:
        parsed = parse_timestamp(text)
    except ValueError:
        return
    assert parsed.tzinfo is UTC
    assert 1 <= parsed.year <= 9999


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(timezones=st.timezones(), allow_imaginary=False),
)
def test_every_real_time_round_trips_through_rfc3339(moment: datetime) -> None:
    text = moment.isoformat()
    offset = moment.utcoffset()
    if offset is None or offset.seconds % 60:
        return  # RFC 3339 offsets have minutes only; some historic zones had seconds
    try:
        expected = moment.astimezone(UTC)
    except OverflowError:  # the UTC time itself is beyond datetime; the parser must say so
        with pytest.raises(ValueError):
            parse_timestamp(text)
        return
    assert parse_timestamp(text) == expected
