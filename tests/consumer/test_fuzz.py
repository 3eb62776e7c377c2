"""Fuzzing the batch planner: valid outcomes mixed with anything a producer can send.

The property: planning never raises, every message lands in exactly one of finish, skip and
dead, each list keeps the batch's order, and every valid outcome is finished, whatever sits
next to it. A message nobody foresaw would reach ``plan_batch``'s safety net; none of these
may (the decoder must refuse them itself, with a reason), so ``plan.errors`` stays 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.ids import event_suffix
from shared.settings import ConsumerSettings
from waitroom_consumer.broker import Message
from waitroom_consumer.handler import Finish, outcomes, plan_batch

SETTINGS = ConsumerSettings()
TOPICS = outcomes(SETTINGS)
CHECKOUT_TOPICS = sorted(TOPICS)
BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

any_char = st.characters(exclude_categories=()) | st.characters(categories=["Cs"])
any_text = st.text(any_char, max_size=30)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=10,
)


@dataclass(frozen=True)
class Valid:
    """A message we must finish, and what finishing it means."""

    body: bytes
    session_id: str
    event_id: str
    timestamp_ms: int | None  # None: unreadable or absent, so the record's time is used


def _go_layout(moment: datetime) -> str:
    offset = moment.utcoffset() or timedelta()
    sign = "-" if offset < timedelta() else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d} "
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}123 "
        f"{sign}{minutes // 60:02d}{minutes % 60:02d} +07 m=+12.345678901"
    )


@st.composite
def valid_outcomes(draw: st.DrawFn) -> Valid:
    event_id = draw(st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1))
    nonce = draw(st.text(BASE64URL, min_size=22, max_size=22))
    ticket = draw(st.integers(min_value=0, max_value=2**63))
    session_id = f"{nonce}.{ticket}.{event_suffix(event_id[:128])}"
    moment = draw(
        st.datetimes(datetime(1971, 1, 1), datetime(2200, 1, 1))
        .map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
        .flatmap(
            lambda d: st.integers(-23 * 60, 23 * 60).map(
                lambda m: d.replace(tzinfo=timezone(timedelta(minutes=m)))
            )
        )
    )
    kind = draw(st.sampled_from(["rfc3339", "go", "unreadable", "absent"]))
    body: dict[str, Any] = {
        "session_id": session_id,
        "user_id": draw(st.text(st.characters(exclude_categories=("Cs",)), max_size=20)),
        "event_id": draw(st.sampled_from([event_id[:128], "", "some other event"])),
    }
    timestamp_ms: int | None = int(moment.astimezone(UTC).timestamp() * 1000)
    if kind == "rfc3339":
        body["timestamp"] = moment.isoformat()
    elif kind == "go":
        body["timestamp"] = _go_layout(moment)
    elif kind == "unreadable":
        body["timestamp"] = draw(
            st.sampled_from(["yesterday", "9999-12-31T23:59:59-23:59", "0000-01-01T00:00:00Z"])
            | st.integers()
            | st.text(st.characters(exclude_categories=()), max_size=5).map(lambda t: t + "?")
        )
        timestamp_ms = None
    else:
        timestamp_ms = None
    extra = draw(st.dictionaries(st.sampled_from(["expired_at", "order_id", "meta"]), any_text))
    encoded = json.dumps({**extra, **body}).encode()
    return Valid(encoded, session_id, event_id[:128], timestamp_ms)


def _nested(depth: int) -> bytes:
    return b'{"session_id":' + b"[" * depth + b"]" * depth + b"}"


garbage = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=17, max_value=30_000).map(_nested),
    st.sampled_from(
        [
            b"[" * 30_000 + b"]" * 30_000,
            b'{"session_id":"' + b"\\ud800" * 22 + b'.1.ZXY"}',
            b'{"session_id":"s","n":' + b"1" * 5000 + b"}",
            b'{"session_id":"' + b"\\udfff" + b'"}',
            b'{"user_id":"u"}',
        ]
    ),
)
entries = st.one_of(
    st.tuples(st.sampled_from(CHECKOUT_TOPICS), valid_outcomes()),
    st.tuples(st.sampled_from([*CHECKOUT_TOPICS, "elsewhere"]), garbage),
    st.tuples(st.just("elsewhere"), valid_outcomes()),  # right shape, wrong topic: dead
    st.tuples(st.sampled_from(CHECKOUT_TOPICS), st.none()),  # tombstone
)


@settings(max_examples=150, deadline=None)
@given(st.lists(entries, max_size=12), st.integers(min_value=-1, max_value=2**41))
def test_planning_never_raises_and_places_every_message_once_finishing_every_valid_one(
    batch_spec: list[tuple[str, Valid | bytes | None]], record_ms: int
) -> None:
    batch = [
        Message(topic, o % 3, o, b"k", item.body if isinstance(item, Valid) else item, record_ms)
        for o, (topic, item) in enumerate(batch_spec)
    ]
    plan = plan_batch(batch, TOPICS, SETTINGS.max_message_bytes)

    assert plan.errors == 0, "an input reached the safety net instead of being refused"
    lists = (
        [f.message.offset for f in plan.finishes],
        [s.message.offset for s in plan.skipped],
        [d.message.offset for d in plan.dead],
    )
    assert sorted(o for offsets in lists for o in offsets) == list(range(len(batch)))
    assert all(offsets == sorted(offsets) for offsets in lists)
    assert all(d.reason for d in plan.dead)
    for f in plan.finishes:  # what goes to Redis must encode, or redis-py fails the pipeline
        f.session_id.encode("utf-8")
        f.event_id.encode("utf-8")

    finished = {f.message.offset: f for f in plan.finishes}
    for offset, (topic, item) in enumerate(batch_spec):
        if not isinstance(item, Valid) or topic not in TOPICS:
            continue
        assert offset in finished, f"valid outcome at {offset} was not finished"
        finish: Finish = finished[offset]
        assert (finish.session_id, finish.event_id) == (item.session_id, item.event_id)
        assert finish.outcome == TOPICS[topic]
        if item.timestamp_ms is not None:
            assert (finish.at_ms, finish.timestamp_error) == (item.timestamp_ms, "")
        elif record_ms >= 0:
            assert finish.at_ms == record_ms
