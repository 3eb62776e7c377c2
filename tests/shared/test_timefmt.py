from datetime import UTC, datetime

import pytest

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
