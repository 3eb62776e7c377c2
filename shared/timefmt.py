"""Timestamps: RFC 3339 out, and the layouts real producers send in.

The order service sends ``checkout.failed`` timestamps in Go's ``time.Now().String()`` layout,
``2025-11-14 10:00:00.123456789 +0700 +07 m=+12.345678901``; everything else is RFC 3339.
"""

from __future__ import annotations

import functools
import re
import time
from datetime import UTC, datetime, timedelta, timezone

# re.ASCII: without it \d also matches other scripts' digits, which int() would then read.
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"\s*(?:([Zz])|([+-])(\d{2}):?(\d{2}))$",
    re.ASCII,
)
# Go: "2006-01-02 15:04:05.999999999 -0700 MST" plus an optional monotonic "m=+1.23" suffix.
_GO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))? ([+-])(\d{2})(\d{2})"
    r"(?: [A-Za-z0-9+-]{1,8})?(?: m=[+-]\d+(?:\.\d+)?)?$",
    re.ASCII,
)


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


@functools.lru_cache(maxsize=4096)
def _second(seconds: int) -> str:
    # Timestamps come in runs within the same second (a relay batch, a stream pass), so the
    # calendar arithmetic is done once per second.
    t = time.gmtime(seconds)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    )


def format_ms(ms: int) -> str:
    """RFC 3339 in UTC with seconds precision, as the contract shows: ``2026-11-26T17:41:39Z``."""
    if ms <= 0:
        return ""
    return f"{_second(ms // 1000)}Z"


def format_ms_precise(ms: int) -> str:
    """RFC 3339 in UTC with milliseconds, for Kafka payloads where ordering matters."""
    seconds, millis = divmod(ms, 1000)
    return f"{_second(seconds)}.{millis:03d}Z"


def _build(
    text: str, groups: tuple[str | None, ...], sign: str | None, hh: str, mm: str
) -> datetime:
    year, month, day, hour, minute, second, frac = groups
    micros = int((frac or "0").ljust(9, "0")[:6])
    try:
        offset = timedelta(hours=int(hh), minutes=int(mm))
        tz = timezone(-offset if sign == "-" else offset)
        local = datetime(
            int(year or 0),
            int(month or 0),
            int(day or 0),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            micros,
            tzinfo=tz,
        )
        # Converting to UTC overflows near the ends of the calendar: "9999-12-31T23:59:59-23:59"
        # is year 10000 in UTC, which datetime cannot hold (it raised OverflowError here).
        return local.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"timestamp out of range ({exc}): {text[:80]!r}") from None


def parse_timestamp(text: str) -> datetime:
    """Parse RFC 3339 (with or without fractions and offsets) or Go's ``Time.String()`` layout.

    Raises:
        ValueError: naming the text, when it is neither layout or names no real UTC time
            (month 13, an offset of a day or more, a time beyond year 9999 in UTC). It is the
            only exception this raises, whatever the string.
    """
    value = text.strip()
    match = _RFC3339.match(value)
    if match:
        g = match.groups()
        if g[7]:
            return _build(text, g[:7], "+", "00", "00")
        return _build(text, g[:7], g[8], g[9] or "00", g[10] or "00")
    match = _GO.match(value)
    if match:
        g = match.groups()
        return _build(text, g[:7], g[7], g[8] or "00", g[9] or "00")
    raise ValueError(f"not an RFC 3339 or Go time.String() timestamp: {text[:80]!r}")


@functools.lru_cache(maxsize=4096)
def _utc_second(groups: tuple[str | None, ...], sign: str | None, hh: str, mm: str) -> int:
    # Messages come in runs of times within the same second, so the calendar arithmetic (5 us,
    # a fifth of the consumer's decoding of a checkout message) is done once per second.
    return int(_build("", (*groups, None), sign, hh, mm).timestamp())


def parse_timestamp_ms(text: str) -> int:
    """``parse_timestamp`` as Unix milliseconds (digits beyond them dropped): the same layouts
    and the same ``ValueError``, in integer arithmetic, fast for many times in one second."""
    value = text.strip()
    match = _RFC3339.match(value)
    if match:
        g = match.groups()
        zulu = g[7] is not None
        args = (g[:6], "+", "00", "00") if zulu else (g[:6], g[8], g[9] or "00", g[10] or "00")
    elif match := _GO.match(value):
        g = match.groups()
        args = (g[:6], g[7], g[8] or "00", g[9] or "00")
    else:
        raise ValueError(f"not an RFC 3339 or Go time.String() timestamp: {text[:80]!r}")
    try:
        second = _utc_second(*args)
    except ValueError:
        parse_timestamp(text)  # raises the error that names the text
        raise
    return second * 1000 + int((g[6] or "0").ljust(3, "0")[:3])
