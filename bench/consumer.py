"""Consumer throughput: checkout outcomes handled per second by one ``waitroom consumer``.

N users are admitted (the admit script, called directly), then N ``checkout.completed``
messages for them wait in Kafka before the consumer starts. The rate is counted from the first
session it finishes to the last (its group join before that is not throughput), by watching the
event's finished set in Redis. The baseline reads the same N messages with the same client and
settings (``shared.connections.kafka_consumer``) in a fresh group, doing nothing with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from bench import kafka
from bench.cpu import CpuWindow
from bench.fill import create_event, fill, paused_event
from bench.procs import stack
from bench.report import Row
from bench.runner import Options
from shared import keys, messages
from shared.events import EventState, EventStore
from shared.kafka import kafka_producer
from shared.scripts import Scripts

EVENT = "consume"


async def _admit_all(redis_url: str, users: int) -> None:
    redis = AsyncRedis.from_url(redis_url)
    scripts = Scripts(redis)
    try:
        await EventStore(redis, scripts).set_state(EVENT, EventState.OPEN)
        admitted = 0
        while admitted < users:
            result = await scripts.admit(EVENT, 500)
            assert result is not None and result.admitted, result
            admitted += result.admitted
        await redis.delete(keys.outbox(EVENT))
    finally:
        await redis.aclose()


def _produce(bootstrap: str, sessions: list[tuple[str, str]]) -> None:
    producer = kafka_producer(kafka.common(bootstrap), kafka.tuning(), client_id="bench-orders")
    try:
        now = int(time.time() * 1000)
        for sid, user in sessions:
            body = messages.checkout_message(messages.CHECKOUT_COMPLETED, sid, user, EVENT, now)
            value = json.dumps(body).encode()
            producer.send(messages.CHECKOUT_COMPLETED, key=EVENT.encode(), value=value)
        producer.flush(timeout=120)
    finally:
        producer.close(timeout=5)


def run(opts: Options) -> list[Row]:
    users = opts.size(100_000, 10_000, minimum=100)
    with stack(opts.workdir) as st:
        kafka.create_topics(st.bootstrap)
        config = paused_event(EVENT, max_concurrent=users, rate=1_000_000)
        asyncio.run(create_event(st.redis_url, config))
        opts.say(f"consumer: admitting {users:,} users and producing their outcomes")
        filled = fill(st.redis_url, EVENT, users, prefix="consume-", sample_every=1)
        asyncio.run(_admit_all(st.redis_url, users))
        _produce(st.bootstrap, list(zip(filled.sampled, filled.sampled_users, strict=True)))
        raw = kafka.raw_consume(st.bootstrap, [messages.CHECKOUT_COMPLETED], users, "bench-raw")
        opts.say(f"consumer: raw consume {raw.per_second:,.0f}/s; starting the consumer")
        consumer = st.waitroom("consumer", st.env())
        client = Redis.from_url(st.redis_url)
        profiling = contextlib.ExitStack()
        try:
            window = CpuWindow({"consumer": consumer.pid, "redis": st.redis_pid})
            first_at = first_count = 0.0
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                done = int(client.zcard(keys.done(EVENT)))
                now = time.monotonic()
                if done and not first_at:
                    first_at, first_count = now, done
                    profiling.enter_context(opts.profiled("consumer", {"consumer": consumer.pid}))
                    window.start()
                    cpu = time.process_time()
                if done >= users:
                    break
                if consumer.proc.poll() is not None:
                    raise RuntimeError(f"the consumer exited:\n{consumer.tail()}")
                time.sleep(0.005)
            else:
                raise TimeoutError(f"the consumer finished {done} of {users} in time")
            ended = time.monotonic()
            window.stop()
            poll_cpu = (time.process_time() - cpu) / window.seconds
        finally:
            profiling.close()
            client.close()
    rate = (users - first_count) / (ended - first_at)
    assert window.cores is not None
    return [
        Row(
            bench="consumer",
            name=f"checkout outcomes handled /s ({users:,})",
            figure=rate,
            unit="/s",
            baseline=raw.per_second,
            baseline_name="raw consume /s",
            target="(none: context)",
            met=None,
            client_cpu=poll_cpu,
            machine_cpu=window.machine,
            notes={
                **{f"{k}_cpu": round(v, 2) for k, v in window.cores.items()},
                "other_cpu": round(window.others([*window.cores.values(), poll_cpu]), 2),
                "raw_consumer_cpu": round(raw.cpu / raw.seconds, 2),
                "seconds": round(ended - first_at, 2),
            },
        )
    ]
