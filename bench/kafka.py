"""Kafka from the benchmark's side: topics, the raw produce and consume baselines, counting and
watching messages.

The baselines use the very clients the waitroom builds (``shared.connections``), with the same
settings, so ``waitroom / raw`` isolates what the waitroom adds to its Kafka client.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from shared.kafka import default_topics, ensure_topics, kafka_consumer, kafka_producer
from shared.settings import CommonSettings, ConsumerSettings, KafkaClientSettings


def common(bootstrap: str) -> CommonSettings:
    return CommonSettings(kafka_bootstrap_servers=bootstrap)


def tuning(**changes: Any) -> KafkaClientSettings:
    """Client tuning as the waitroom's processes get it on this stack (short group timeouts)."""
    base = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 600}
    base.update(changes)
    return KafkaClientSettings(**base)


def create_topics(bootstrap: str, extra: tuple[str, ...] = ()) -> None:
    topics = default_topics(ConsumerSettings())
    topics.update(dict.fromkeys(extra, 4))
    ensure_topics(common(bootstrap), topics, explicit=True)


def count(bootstrap: str, topic: str, event_id: str, expected: int, timeout: float = 60) -> int:
    """Messages of ``event_id`` in ``topic``, read back (Tansu's end offsets are not message
    counts); stops early once ``expected`` were seen and nothing more came for a second."""
    watcher = Watcher(bootstrap, topic, fetch_max_wait_ms=100)
    needle = json.dumps(event_id).encode()
    seen = 0
    quiet_since = time.monotonic()
    deadline = quiet_since + timeout
    try:
        while time.monotonic() < deadline:
            got = 0
            for _, value in watcher.poll(200):
                got += 1
                if needle in value and json.loads(value).get("event_id") == event_id:
                    seen += 1
            now = time.monotonic()
            if got:
                quiet_since = now
            elif seen >= expected and now - quiet_since > 1.0:
                break
        return seen
    finally:
        watcher.close()


@dataclass(frozen=True)
class Rate:
    messages: int
    seconds: float
    cpu: float  # CPU seconds of this process meanwhile (the client's own cost)

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


def raw_produce(bootstrap: str, topic: str, key: bytes, value: bytes, count: int) -> Rate:
    """Send ``count`` copies of ``value`` with the waitroom's producer; time until all acked."""
    producer = kafka_producer(common(bootstrap), tuning(), client_id="bench-raw-producer")
    try:
        producer.send(topic, key=key, value=value).get(timeout=30)  # connected, metadata known
        cpu, started = time.process_time(), time.monotonic()
        for _ in range(count):
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=120)
        return Rate(count, time.monotonic() - started, time.process_time() - cpu)
    finally:
        producer.close(timeout=5)


def raw_consume(bootstrap: str, topics: list[str], count: int, group: str) -> Rate:
    """Read ``count`` messages with the waitroom's consumer settings in a fresh group; timed
    from the first message (the group join before it is not consumption)."""
    settings = ConsumerSettings(group=group)
    consumer = kafka_consumer(common(bootstrap), tuning(), settings)
    try:
        consumer.subscribe(topics)
        seen = 0
        started = cpu = 0.0
        deadline = time.monotonic() + 120
        while seen < count and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500, max_records=500)
            n = sum(len(records) for records in batch.values())
            if n and not seen:
                started, cpu = time.monotonic(), time.process_time()
            seen += n
        if seen < count:
            raise TimeoutError(f"raw consume saw {seen} of {count} messages")
        return Rate(count, time.monotonic() - started, time.process_time() - cpu)
    finally:
        consumer.close()


class Watcher:
    """Reads a topic from the start on every partition (no group), with a short fetch wait so
    it sees a message within a few milliseconds of the broker having it."""

    def __init__(self, bootstrap: str, topic: str, fetch_max_wait_ms: int = 5) -> None:
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id="bench-watcher",
            enable_auto_commit=False,
            fetch_max_wait_ms=fetch_max_wait_ms,
            auto_offset_reset="earliest",
        )
        parts = self.consumer.partitions_for_topic(topic) or set()
        self.consumer.assign([TopicPartition(topic, p) for p in parts])
        self.consumer.seek_to_beginning()

    def poll(self, timeout_ms: int = 50) -> Iterator[tuple[float, bytes]]:
        """(arrival time, value) of each message that arrived."""
        batch = self.consumer.poll(timeout_ms=timeout_ms)
        now = time.time()
        for records in batch.values():
            for record in records:
                yield now, record.value

    def close(self) -> None:
        self.consumer.close()
