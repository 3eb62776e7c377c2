"""Measure the consumer's handled messages per second against the raw consume rate.

Not a test (nothing here may fail on a number): ``python tests/consumer/throughput.py [N]``.
It starts its own Redis and broker, admits N users to one event, produces N checkout.completed
messages keyed by the event id (as the order service does, so all land in one partition), then:

1. raw: the same kafka-python consumer the worker builds (``shared.connections.kafka_consumer``,
   same settings), in a fresh group, only polling until it has seen all N records;
2. consumer: ``waitroom consumer`` as a process in another fresh group, timed from the first
   freed slot to the last (Redis is read every 20 ms);
3. for reference, the Redis side alone: ``Scripts.finish`` one call per message versus
   ``Scripts.finish_many`` in batches of 500 (what the consumer sends per poll), on fresh sessions.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from redis.asyncio import Redis

from shared.connections import kafka_consumer
from shared.events import EventConfig, EventStore
from shared.messages import checkout_message
from shared.scripts import Scripts
from shared.sessions import Status
from shared.settings import CommonSettings, ConsumerSettings, KafkaClientSettings
from shared.timefmt import now_ms
from waitroom_dev.services import LocalServices, local_services

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaProducer

TOPIC = "bench.checkout.completed"
TUNING = KafkaClientSettings(
    session_timeout_ms=2000, heartbeat_interval_ms=600, fetch_max_wait_ms=50
)


async def admitted(url: str, event_id: str, n: int) -> list[str]:
    client = Redis.from_url(url)
    try:
        s = Scripts(client)
        await EventStore(client, s).create(EventConfig(event_id, max_concurrent=n, rate=1_000_000))
        sids = []
        for start in range(0, n, 50):
            joins = [s.join(event_id, f"user{i}") for i in range(start, min(n, start + 50))]
            sids += [j.session_id for j in await asyncio.gather(*joins)]
        done = 0
        while done < n:
            result = await s.admit(event_id, 5000)
            assert result is not None and result.admitted > 0
            done += result.admitted
        return sids
    finally:
        await client.aclose()


async def in_checkout(client: Redis, event_id: str) -> int:
    return (await Scripts(client).status(event_id, [])).in_checkout


def produce(bootstrap: str, event_id: str, sids: list[str]) -> None:
    producer = KafkaProducer(
        bootstrap_servers=[bootstrap], acks="all", linger_ms=10, batch_size=65536
    )
    for sid in sids:
        body = checkout_message("checkout.completed", sid, "user", event_id, now_ms())
        producer.send(TOPIC, key=event_id.encode(), value=json.dumps(body).encode())
    producer.flush(60)
    producer.close()


def raw_rate(svc: LocalServices, n: int) -> float:
    common = CommonSettings(redis_url=svc.redis_url, kafka_bootstrap_servers=svc.bootstrap)
    settings = ConsumerSettings(group="bench-raw", topic_completed=TOPIC)
    consumer = kafka_consumer(common, TUNING, settings)
    consumer.subscribe([TOPIC])
    seen, first = 0, 0.0
    try:
        while seen < n:
            for records in consumer.poll(timeout_ms=500).values():
                if not first:
                    first = time.perf_counter()
                seen += len(records)
        return n / (time.perf_counter() - first)
    finally:
        consumer.close(autocommit=False)


def consumer_rate(svc: LocalServices, event_id: str, n: int, log: Path) -> float:
    env = {
        **os.environ,
        **svc.env(),
        "WAITROOM_CONSUMER_GROUP": "bench-consumer",
        "WAITROOM_TOPIC_CHECKOUT_COMPLETED": TOPIC,
        "WAITROOM_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "WAITROOM_KAFKA_HEARTBEAT_INTERVAL_MS": "600",
        "WAITROOM_KAFKA_FETCH_MAX_WAIT_MS": "50",
        "WAITROOM_LOG_LEVEL": "WARNING",
    }

    async def watch() -> float:
        client = Redis.from_url(svc.redis_url)
        try:
            first_left, first = n, 0.0
            while True:
                left = await in_checkout(client, event_id)
                if left < n and not first:
                    first_left, first = left, time.perf_counter()
                if left == 0:
                    return (first_left if first_left < n else n) / (time.perf_counter() - first)
                await asyncio.sleep(0.02)
        finally:
            await client.aclose()

    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "waitroom_consumer"], env=env, stdout=out, stderr=out
        )
        try:
            return asyncio.run(watch())
        finally:
            proc.terminate()
            proc.wait(30)


async def redis_side(url: str, n: int) -> tuple[float, float]:
    client = Redis.from_url(url)
    try:
        s = Scripts(client)
        one = await admitted(url, "bench-one", n)
        started = time.perf_counter()
        for sid in one:
            await s.finish("bench-one", sid, Status.COMPLETED, "completed")
        single = n / (time.perf_counter() - started)
        many = await admitted(url, "bench-many", n)
        started = time.perf_counter()
        for i in range(0, n, 500):
            outcomes = [("bench-many", sid, 5, "completed") for sid in many[i : i + 500]]
            await s.finish_many(outcomes)
        pipelined = n / (time.perf_counter() - started)
        return single, pipelined
    finally:
        await client.aclose()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    with tempfile.TemporaryDirectory() as tmp, local_services(Path(tmp)) as svc:
        event_id = "bench-event"
        sids = asyncio.run(admitted(svc.redis_url, event_id, n))
        produce(svc.bootstrap, event_id, sids)
        raw = raw_rate(svc, n)
        handled = consumer_rate(svc, event_id, n, Path(tmp) / "consumer.log")
        single, pipelined = asyncio.run(redis_side(svc.redis_url, n))
    print(f"messages                          {n}")
    print(f"raw kafka-python consume          {raw:10,.0f} msg/s")
    print(f"waitroom consumer, handled        {handled:10,.0f} msg/s")
    print(f"Redis only: finish one by one     {single:10,.0f} msg/s")
    print(f"Redis only: finish_many by 500    {pipelined:10,.0f} msg/s")


if __name__ == "__main__":
    main()
