"""What a chaos run is judged on besides the clients: Kafka from the beginning, Redis at the end,
and the number of users in checkout sampled in Redis while the faults ran."""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis

from shared import keys, messages
from shared.ids import event_suffix
from shared.sessions import SessionRecord

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka  # noqa: F401

#: Every topic a run reads back: what the waitroom produced and what the order service sent.
TOPICS = (*messages.PRODUCED_TOPICS, *messages.CHECKOUT_TOPICS, "waitroom.dlq")


@dataclass(frozen=True)
class KafkaRecord:
    topic: str
    partition: int
    offset: int
    message_id: str
    body: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            **self.body,
        }


def read_kafka(bootstrap: str, event_id: str, timeout: float = 60.0) -> list[KafkaRecord]:
    """Every record of the event (its key) on every topic, read up to each partition's end."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=[bootstrap], enable_auto_commit=False, request_timeout_ms=10000
    )
    try:
        existing = consumer.topics()
        parts = [
            TopicPartition(topic, p)
            for topic in TOPICS
            if topic in existing
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        key = event_id.encode()
        got: list[KafkaRecord] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            if time.monotonic() > deadline:
                raise TimeoutError("Kafka was not read to its end in time")
            for records in consumer.poll(timeout_ms=200).values():
                for r in records:
                    if r.key != key:
                        continue
                    body = json.loads(r.value)
                    got.append(
                        KafkaRecord(
                            r.topic, r.partition, r.offset, body.get("message_id", ""), body
                        )
                    )
        return got
    finally:
        consumer.close()


@dataclass
class RedisState:
    """One event's state at the end of a run, as Redis holds it."""

    exists: bool
    sessions: dict[str, SessionRecord] = field(default_factory=dict)  # session id -> record
    in_checkout: int = 0
    outbox: int = 0
    seq: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "exists": self.exists,
            "in_checkout": self.in_checkout,
            "outbox": self.outbox,
            "seq": self.seq,
            "sessions": {
                sid: [r.status.name, r.user_id, r.admitted_ms, r.finished_ms, r.reason]
                for sid, r in self.sessions.items()
            },
        }


def read_redis(redis_url: str, event_id: str) -> RedisState:
    client = redis.Redis.from_url(redis_url)
    try:
        state = RedisState(exists=bool(client.exists(keys.config(event_id))))
        suffix = event_suffix(event_id)
        for raw_ticket, raw in client.hgetall(keys.sessions(event_id)).items():
            ticket = int(raw_ticket)
            nonce = json.loads(raw)[2]
            state.sessions[f"{nonce}.{ticket}.{suffix}"] = SessionRecord.decode(raw, ticket)
        state.in_checkout = int(client.zcard(keys.checkout(event_id)))
        state.outbox = int(client.xlen(keys.outbox(event_id)))
        state.seq = int(client.get(keys.seq(event_id)) or 0)
        return state
    finally:
        client.close()


class CapSampler:
    """Reads the number of leases (users in checkout) every few ms while the run goes on.

    Reads that fail (Redis paused, killed, restarting) are counted, not retried: the sampler
    only needs to see the states Redis was in.
    """

    def __init__(self, redis_url: str, event_id: str, interval: float = 0.01) -> None:
        self.redis_url = redis_url
        self.event_id = event_id
        self.interval = interval
        self.samples: list[int] = []
        self.failed = 0

    async def run(self, stop: asyncio.Event) -> None:
        client = AsyncRedis.from_url(self.redis_url, socket_timeout=1, socket_connect_timeout=1)
        try:
            while not stop.is_set():
                try:
                    self.samples.append(int(await client.zcard(keys.checkout(self.event_id))))
                except (redis.RedisError, OSError):
                    self.failed += 1
                    await asyncio.sleep(0.1)
                await asyncio.sleep(self.interval)
        finally:
            await client.aclose()
