"""Helpers for the consumer tests: topics, the consumer as a process, Redis and Kafka access.

Kafka state lives for the whole session, so each test gets a unique consumer group and unique
topic names (through the settings variables); no test ever sees another's messages or offsets.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from shared.events import EventConfig, EventStore
from shared.messages import checkout_message
from shared.scripts import Scripts
from shared.sessions import SessionRecord
from shared.timefmt import now_ms
from tests.support import with_scripts as run

with warnings.catch_warnings():
    # kafka-python reads its protocol schemas with a deprecated importlib call at import time.
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka  # noqa: F401

T = TypeVar("T")
DEADLINE = 60.0


@dataclass(frozen=True)
class Topics:
    """One test's topic names and consumer group."""

    completed: str
    failed: str
    expired: str
    dlq: str
    group: str

    def env(self) -> dict[str, str]:
        return {
            "WAITROOM_TOPIC_CHECKOUT_COMPLETED": self.completed,
            "WAITROOM_TOPIC_CHECKOUT_FAILED": self.failed,
            "WAITROOM_TOPIC_CHECKOUT_EXPIRED": self.expired,
            "WAITROOM_DLQ_TOPIC": self.dlq,
            "WAITROOM_CONSUMER_GROUP": self.group,
        }

    def topic(self, kind: str) -> str:
        """The topic for a contract topic name (checkout.completed, ...)."""
        return {
            "checkout.completed": self.completed,
            "checkout.failed": self.failed,
            "checkout.expired": self.expired,
        }[kind]


# --- the consumer as a process -----------------------------------------------------------------


@dataclass
class ConsumerProcess:
    """``waitroom consumer`` running as a child process, its output in a log file."""

    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ConsumerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "waitroom_consumer"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# --- Redis ---------------------------------------------------------------------------------------


def admitted_sessions(
    redis_url: str, event_id: str, admitted: int, waiting: int = 0
) -> tuple[list[str], list[str]]:
    """An event with ``admitted`` users in checkout (all its slots) and ``waiting`` queued."""

    async def body(s: Scripts) -> tuple[list[str], list[str]]:
        config = EventConfig(event_id, max_concurrent=admitted, rate=1_000_000)
        await EventStore(s.redis, s).create(config)
        sids = [(await s.join(event_id, f"user{i}")).session_id for i in range(admitted + waiting)]
        done = 0
        while done < admitted:
            result = await s.admit(event_id, admitted - done)
            assert result is not None and result.admitted > 0
            done += result.admitted
        return sids[:admitted], sids[admitted:]

    return run(redis_url, body)


def records(redis_url: str, event_id: str, sids: list[str]) -> list[SessionRecord | None]:
    async def body(s: Scripts) -> list[SessionRecord | None]:
        result = await s.status(event_id, sids)
        return [view.record for view in result.sessions]

    return run(redis_url, body)


def in_checkout(redis_url: str, event_id: str) -> int:
    async def body(s: Scripts) -> int:
        return (await s.status(event_id, [])).in_checkout

    return run(redis_url, body)


def wait_until(check: Callable[[], Any], timeout: float = DEADLINE, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what or check}")
        time.sleep(0.1)


# --- Kafka ---------------------------------------------------------------------------------------


def outcome(kind: str, sid: str, event_id: str, user_id: str = "u") -> bytes:
    """A checkout outcome message as the order service sends it."""
    return json.dumps(checkout_message(kind, sid, user_id, event_id, now_ms())).encode()


def produce(bootstrap: str, records_: list[tuple[str, bytes, bytes]]) -> None:
    """Produce ``(topic, key, value)`` records in order and wait for every acknowledgement."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=[bootstrap], acks="all", linger_ms=5)
    try:
        futures = [producer.send(t, key=k, value=v) for t, k, v in records_]
        producer.flush(30)
        for f in futures:
            f.get(30)
    finally:
        producer.close(5)


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[Any]:
    """Read a topic from the beginning until ``expected`` records (or the timeout)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=[bootstrap], enable_auto_commit=False)
    try:
        deadline = time.monotonic() + timeout
        partitions = None
        while not partitions and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                time.sleep(0.1)
        if not partitions:
            return []
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        consumer.seek_to_beginning()
        got: list[Any] = []
        while len(got) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                got.extend(batch)
        return sorted(got, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


# --- a stand-in for kafka-python's consumer, for the broker's bookkeeping without a broker ----


@dataclass(frozen=True)
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes = b"k"
    value: bytes = b"{}"
    timestamp: int = -1


@dataclass
class FakeKafka:
    """Returns the records it is given, one poll at a time, as kafka-python's poll() does,
    and notes each seek."""

    next: dict[Any, list[FakeRecord]] = field(default_factory=dict)
    seeks: dict[Any, int] = field(default_factory=dict)

    def poll(self, timeout_ms: int) -> dict[Any, list[FakeRecord]]:
        batch, self.next = self.next, {}
        return batch

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks[tp] = offset


def records_of(tp: Any, offsets: range) -> list[FakeRecord]:
    """``tp``'s records at ``offsets`` (``tp`` a kafka-python TopicPartition)."""
    return [FakeRecord(tp.topic, tp.partition, o) for o in offsets]
