"""Admission throughput: users moved into checkout per second, each ``queue.ready`` acked by Kafka.

A queue of N users waits on a paused event with room for all of them in checkout and no rate
limit to speak of; the admitter (``waitroom admitter``) owns the event and has relayed a warm-up
event already, so its producer is connected. The clock starts when the event is opened and stops
when every user holds a slot and the outbox is empty: the relay deletes a record only after
Kafka acknowledged it. The baseline is the same Kafka producer (settings from
``shared.connections``) sending the same number of messages of the same size, as fast as it can.
"""

from __future__ import annotations

import asyncio
import json
import time

from redis import Redis

from bench import kafka
from bench.cpu import CpuWindow
from bench.fill import create_event, fill, paused_event
from bench.procs import Stack, stack
from bench.report import Row
from bench.runner import Options, wait_until
from shared import keys, messages
from shared.events import EventState, EventStore

TARGET_VS_RAW = 0.6
RAW_TOPIC = "bench.raw"


def _queue(st: Stack, event_id: str, users: int) -> None:
    config = paused_event(event_id, max_concurrent=users, rate=1_000_000, checkout_ttl_seconds=3600)
    asyncio.run(create_event(st.redis_url, config))
    filled = fill(st.redis_url, event_id, users, prefix=f"{event_id}-")
    assert filled.joined == users, filled
    client = Redis.from_url(st.redis_url)
    try:
        client.delete(keys.outbox(event_id))  # their queue.joined records: relayed long ago
    finally:
        client.close()


async def _open(redis_url: str, event_id: str) -> None:
    from redis.asyncio import Redis as AsyncRedis

    redis = AsyncRedis.from_url(redis_url)
    try:
        await EventStore(redis).set_state(event_id, EventState.OPEN)
    finally:
        await redis.aclose()


def _settled(client: Redis, event_id: str, users: int) -> bool:
    with client.pipeline(transaction=False) as pipe:
        pipe.zcard(keys.checkout(event_id))
        pipe.xlen(keys.outbox(event_id))
        in_checkout, backlog = pipe.execute()
    return int(in_checkout) == users and int(backlog) == 0


def _ready_size(bootstrap: str, event_id: str) -> int:
    """Bytes of one real ``queue.ready`` value of ``event_id`` (the raw baseline sends these)."""
    watcher = kafka.Watcher(bootstrap, messages.QUEUE_READY)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for _, value in watcher.poll(200):
                if json.loads(value).get("event_id") == event_id:
                    return len(value)
        raise TimeoutError("no queue.ready message seen")
    finally:
        watcher.close()


def run(opts: Options) -> list[Row]:
    users = opts.size(200_000, 10_000, minimum=100)
    with stack(opts.workdir) as st:
        kafka.create_topics(st.bootstrap, (RAW_TOPIC,))
        opts.say(f"admission: queueing {users:,} users")
        _queue(st, "admit", users)
        warm = 10
        _queue(st, "warm", warm)
        admitter = st.admitter()
        client = Redis.from_url(st.redis_url)
        try:
            asyncio.run(_open(st.redis_url, "warm"))
            wait_until(lambda: _settled(client, "warm", warm), 60, "the warm-up admissions")
            wait_until(lambda: bool(client.exists(keys.lock("admit"))), 30, "the admitter lock")
            size = _ready_size(st.bootstrap, "warm")
            opts.say(f"admission: queue.ready is {size} bytes; raw produce of {users:,}")
            raw = kafka.raw_produce(st.bootstrap, RAW_TOPIC, b"admit", b"x" * size, users)
            opts.say(f"admission: raw produce {raw.per_second:,.0f}/s; opening the event")
            window = CpuWindow(
                {"admitter": admitter.pid, "redis": st.redis_pid, "broker": st.broker_pid}
            )
            with opts.profiled("admission", {"admitter": admitter.pid}):
                window.start()
                cpu, started = time.process_time(), time.monotonic()
                asyncio.run(_open(st.redis_url, "admit"))
                ended = wait_until(
                    lambda: _settled(client, "admit", users), 600, "every admission relayed", 0.005
                )
            poll_cpu = time.process_time() - cpu
            window.stop()
        finally:
            client.close()
        produced = kafka.count(st.bootstrap, messages.QUEUE_READY, "admit", users)
    seconds = ended - started
    rate = users / seconds
    assert window.cores is not None
    return [
        Row(
            bench="admission",
            name=f"admitted + queue.ready acked /s ({users:,} users)",
            figure=rate,
            unit="/s",
            baseline=raw.per_second,
            baseline_name=f"raw produce /s, {size} B",
            target=f">= {TARGET_VS_RAW:g}x raw produce",
            met=rate >= TARGET_VS_RAW * raw.per_second,
            client_cpu=poll_cpu / seconds,
            machine_cpu=window.machine,
            notes={
                **{f"{k}_cpu": round(v, 2) for k, v in window.cores.items()},
                "other_cpu": round(window.others([*window.cores.values(), poll_cpu / seconds]), 2),
                "raw_producer_cpu": round(raw.cpu / raw.seconds, 2),
                "queue_ready_on_kafka": produced,
                "seconds": round(seconds, 2),
            },
        )
    ]
