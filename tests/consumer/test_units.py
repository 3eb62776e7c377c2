"""Pure parts of the consumer: sorting a batch, dead-letter records, error classes, log throttle."""

from __future__ import annotations

import json
import logging
import socket

import pytest

from shared.ids import event_suffix
from shared.kafka import KafkaUnreachable, probe_kafka
from shared.logs import KafkaLogThrottle
from shared.sessions import Status
from shared.settings import ConsumerSettings
from waitroom_consumer import deadletter
from waitroom_consumer.broker import Message
from waitroom_consumer.handler import outcomes, plan_batch

SETTINGS = ConsumerSettings(topic_completed="done-topic")
SID = f"{'a' * 22}.17.{event_suffix('ev-1')}"


def message(value: bytes | None, topic: str = "done-topic", offset: int = 0) -> Message:
    return Message(topic, 2, offset, b"ev-1", value)


def test_a_batch_is_sorted_into_finishes_unknown_sessions_and_dead_letters_in_order() -> None:
    good = json.dumps({"session_id": SID, "timestamp": "2025-11-14T10:00:00+07:00"}).encode()
    batch = [
        message(good, offset=0),
        message(b"nope", offset=1),
        message(json.dumps({"session_id": "someone-elses"}).encode(), offset=2),
        message(good, topic="checkout.failed", offset=3),
        message(b"x" * 70_000, offset=4),
        message(None, offset=5),
        message(good, topic="elsewhere", offset=6),
    ]
    plan = plan_batch(batch, outcomes(SETTINGS), SETTINGS.max_message_bytes)
    assert [(f.message.offset, f.event_id, f.session_id) for f in plan.finishes] == [
        (0, "ev-1", SID),
        (3, "ev-1", SID),
    ]
    assert [f.outcome.status for f in plan.finishes] == [Status.COMPLETED, Status.FAILED]
    assert [f.outcome.word for f in plan.finishes] == ["completed", "failed"]
    assert [(k.outcome.word, k.result) for k in plan.skipped] == [("completed", "not_ours")]
    assert [(d.message.offset, d.reason.split(":")[0]) for d in plan.dead] == [
        (1, "not JSON"),
        (4, "message is 70000 bytes; at most 65536"),
        (5, "empty message (tombstone)"),
        (6, "not a checkout topic"),
    ]


GO_TIMESTAMP = "2025-11-14 10:00:00.123456789 +0700 +07 m=+12.345678901"
RECORD_MS = 1_763_000_000_000


def order_service(topic: str, session_id: str, timestamp: str) -> Message:
    """A checkout outcome exactly as CONTRACT.md shows the order service sending it."""
    body = {"session_id": session_id, "user_id": "user-7", "event_id": "ev-1"}
    body["timestamp"] = timestamp
    if topic == "checkout.expired":
        body["expired_at"] = timestamp
    return Message(topic, 0, 0, b"ev-1", json.dumps(body).encode(), RECORD_MS)


def test_the_order_service_s_messages_are_finished_or_skipped_never_dead_lettered() -> None:
    settings = ConsumerSettings()  # the contract's topic names
    batch = [
        order_service("checkout.failed", "", GO_TIMESTAMP),  # an order outside the waitroom
        order_service("checkout.failed", SID, GO_TIMESTAMP),
        order_service("checkout.completed", SID, "2026-11-26T17:41:39Z"),
        order_service("checkout.expired", SID, "2026-11-26T17:41:39.250+07:00"),
        order_service("checkout.completed", SID, "yesterday at noon"),  # unreadable
        order_service("checkout.failed", "not-a-waitroom-id", GO_TIMESTAMP),
    ]
    batch = [
        Message(m.topic, m.partition, i, m.key, m.value, RECORD_MS) for i, m in enumerate(batch)
    ]
    plan = plan_batch(batch, outcomes(settings), settings.max_message_bytes)
    assert plan.dead == [] and plan.errors == 0
    assert [(k.message.offset, k.outcome.word, k.result) for k in plan.skipped] == [
        (0, "failed", "not_ours"),
        (5, "failed", "not_ours"),
    ]
    assert [(f.message.offset, f.outcome.word, f.at_ms) for f in plan.finishes] == [
        (1, "failed", 1763089200123),
        (2, "completed", 1795714899000),
        (3, "expired", 1795689699250),
        (4, "completed", RECORD_MS),  # the record's own time stands in
    ]
    assert [bool(f.timestamp_error) for f in plan.finishes] == [False, False, False, True]
    assert "yesterday at noon" in plan.finishes[3].timestamp_error


def test_the_messages_that_stalled_a_partition_are_dead_lettered_with_a_reason() -> None:
    overflow = {"session_id": SID, "timestamp": "9999-12-31T23:59:59-23:59"}
    batch = [
        message(b"[" * 30_000 + b"]" * 30_000, offset=0),
        message(b'{"session_id":' + b'{"a":' * 9_000 + b"1" + b"}" * 9_001, offset=1),
        message(json.dumps(overflow).encode(), offset=2),
        message(json.dumps({"session_id": "\ud800" * 22 + ".1.ZXY"}).encode(), offset=3),
        message(json.dumps({"session_id": SID}).encode(), offset=4),
    ]
    plan = plan_batch(batch, outcomes(SETTINGS), SETTINGS.max_message_bytes)
    assert [(d.message.offset, d.reason) for d in plan.dead] == [
        (0, "JSON nested deeper than 16 levels"),
        (1, "JSON nested deeper than 16 levels"),
        (3, "field 'session_id' is not valid Unicode (a lone surrogate)"),
    ]
    # A time beyond year 9999 in UTC cannot be read, but the outcome still frees the slot.
    assert [(f.message.offset, bool(f.timestamp_error)) for f in plan.finishes] == [
        (2, True),
        (4, False),
    ]
    assert "out of range" in plan.finishes[0].timestamp_error


def test_whatever_planning_one_message_raises_dead_letters_that_message_only(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from waitroom_consumer import handler

    real = handler.decode_checkout

    def decode(topic: str, value: bytes | None, max_bytes: int) -> object:
        if value == b"boom":  # stands in for any bug or input nobody foresaw
            raise KeyError("\ud800 " + "x" * 1000)
        return real(topic, value, max_bytes)

    monkeypatch.setattr(handler, "decode_checkout", decode)
    good = json.dumps({"session_id": SID}).encode()
    batch = [message(good, offset=0), message(b"boom", offset=1), message(good, offset=2)]
    with caplog.at_level(logging.ERROR, logger="waitroom.consumer"):
        plan = plan_batch(batch, outcomes(SETTINGS), SETTINGS.max_message_bytes)
    assert [f.message.offset for f in plan.finishes] == [0, 2]
    ((dead),) = plan.dead
    assert dead.message.offset == 1 and plan.errors == 1
    assert dead.reason.startswith("cannot be handled: KeyError: ")
    assert dead.reason.isascii() and len(dead.reason) <= deadletter.MAX_REASON_CHARS
    (logged,) = caplog.records
    assert logged.exc_info is not None and "@1" in logged.getMessage()


def test_a_dead_letter_keeps_the_original_bytes_and_where_they_came_from() -> None:
    original = b"\x00\xffnot json at all"
    letter = deadletter.DeadLetter(Message("t", 3, 42, b"\xfe", original), "not JSON: ...")
    body = deadletter.decode(deadletter.encode(letter, "grp", 1_700_000_000_000))
    assert body["value"] == original
    assert (body["topic"], body["partition"], body["offset"]) == ("t", 3, 42)
    assert body["key"] is None and body["key_base64"] == "/g=="  # not UTF-8: base64 only
    assert (body["reason"], body["consumer_group"]) == ("not JSON: ...", "grp")
    assert body["time"] == "2023-11-14T22:13:20.000Z"
    tombstone = deadletter.DeadLetter(Message("t", 0, 1, None, None), "empty")
    assert deadletter.decode(deadletter.encode(tombstone, "grp", 1))["value"] is None


def test_a_huge_original_keeps_its_head_so_the_dead_letter_still_fits_the_broker() -> None:
    huge = b"x" * (deadletter.MAX_ORIGINAL_BYTES + 10)
    letter = deadletter.DeadLetter(Message("t", 0, 1, None, huge), "too large")
    record = deadletter.encode(letter, "grp", 1)
    assert len(record) < 2 * deadletter.MAX_ORIGINAL_BYTES
    body = deadletter.decode(record)
    assert body["value"] == huge[: deadletter.MAX_ORIGINAL_BYTES]
    assert (body["value_bytes"], body["value_truncated"]) == (len(huge), True)


def test_kafka_client_logs_are_throttled_and_ours_are_not() -> None:
    throttle = KafkaLogThrottle(interval=3600)

    def record(name: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, __file__, 1, "down %s", ("x",), None)

    assert throttle.filter(record("kafka.net.connection"))
    assert not throttle.filter(record("kafka.cluster"))
    assert not throttle.filter(record("kafka.coordinator"))
    assert throttle.filter(record("waitroom.consumer"))
    throttle.last = float("-inf")  # the interval has passed
    passed = record("kafka.net.manager")
    assert throttle.filter(passed)
    assert passed.getMessage() == "down x (2 kafka-python messages dropped before this one)"


def test_probe_fails_fast_when_no_broker_listens() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        with pytest.raises(KafkaUnreachable, match=f"127.0.0.1:{port}"):
            probe_kafka([f"127.0.0.1:{port}"], timeout=1)
    with pytest.raises(KafkaUnreachable, match="no bootstrap servers"):
        probe_kafka([])
