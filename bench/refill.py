"""Slot refill latency: ``checkout.completed`` produced -> the next user's ``queue.ready`` on Kafka.

Checkout is full (every slot leased) and a long queue waits behind it; ``waitroom consumer`` and
``waitroom admitter`` run as operators run them. One sample at a time, the benchmark completes
the checkout of the oldest admitted user (produce, acks=all) and watches ``queue.ready`` until
the next user's message is readable there. Each sample is split at the admission time recorded
in that message (Redis's clock, the same machine's): before it, the consumer and the admitter's
wake-up; after it, the relay and Kafka.

The consumer's fetch wait is what Tansu needs to answer like Apache Kafka: Tansu holds a fetch
for the whole wait even when data arrives, while Kafka answers at once (fetch.min.bytes 1); the
run with the production default (100 ms) is reported beside it.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import deque
from dataclasses import dataclass, field

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from bench import kafka
from bench.cpu import CpuWindow
from bench.fill import create_event, fill, paused_event
from bench.load import percentile
from bench.procs import Stack, stack
from bench.report import Row
from bench.runner import Options, wait_until
from shared import keys, messages
from shared.events import EventState, EventStore
from shared.kafka import kafka_producer
from shared.timefmt import parse_timestamp

TARGET_P50_MS = 20.0
TARGET_P99_MS = 100.0
EVENT = "refill"
SLOTS = 100
FAST_FETCH_MS = 10
PING_TOPIC = "bench.ping"


@dataclass
class Samples:
    total: list[float] = field(default_factory=list)  # seconds
    to_admission: list[float] = field(default_factory=list)
    after_admission: list[float] = field(default_factory=list)
    missed: int = 0

    def p(self, which: list[float], q: float) -> float:
        return percentile(sorted(which), q) * 1000


class Refiller:
    """Completes checkouts one at a time and times the refill each one causes."""

    def __init__(self, st: Stack) -> None:
        self.st = st
        self.watcher = kafka.Watcher(st.bootstrap, messages.QUEUE_READY)
        self.producer = kafka_producer(
            kafka.common(st.bootstrap), kafka.tuning(linger_ms=0), client_id="bench-order-service"
        )
        self.admitted: deque[tuple[str, str]] = deque()  # (session id, user id), oldest first
        self.seen: set[str] = set()

    def __repr__(self) -> str:
        return f"Refiller(admissions_seen={len(self.seen)}, slots_known={len(self.admitted)})"

    def close(self) -> None:
        self.producer.close(timeout=5)
        self.watcher.close()

    def one_hop(self, count: int) -> list[float]:
        """Produce -> readable latencies of single messages on an idle topic: the floor of
        one Kafka hop with these clients (a refill takes two)."""
        watcher = kafka.Watcher(self.st.bootstrap, PING_TOPIC)
        try:
            list(watcher.poll(100))
            took = []
            for i in range(count):
                started = time.time()
                self.producer.send(PING_TOPIC, key=b"ping", value=str(i).encode())
                self.producer.flush(timeout=10)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    arrived = [t for t, _ in watcher.poll(5)]
                    if arrived:
                        took.append(arrived[0] - started)
                        break
                time.sleep(random.uniform(0.01, 0.05))
            return sorted(took)
        finally:
            watcher.close()

    def _take(self, timeout: float) -> list[tuple[float, dict[str, object]]]:
        """queue.ready messages of new admissions that arrived within ``timeout``."""
        new = []
        for arrived, value in self.watcher.poll(round(timeout * 1000)):
            body = json.loads(value)
            sid = str(body["session_id"])
            if body.get("event_id") != EVENT or sid in self.seen:
                continue  # another event, or a relay's repeat
            self.seen.add(sid)
            self.admitted.append((sid, str(body["user_id"])))
            new.append((arrived, body))
        return new

    def collect(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"saw {len(self.seen)} of {count} admissions")
            self._take(0.1)

    def sample(self, out: Samples, timeout: float = 10.0) -> None:
        sid, user = self.admitted.popleft()
        body = messages.checkout_message(
            messages.CHECKOUT_COMPLETED, sid, user, EVENT, int(time.time() * 1000)
        )
        value = json.dumps(body).encode()
        started = time.time()
        self.producer.send(messages.CHECKOUT_COMPLETED, key=EVENT.encode(), value=value)
        self.producer.flush(timeout=10)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for arrived, ready in self._take(0.005):
                admitted = parse_timestamp(str(ready["admitted_at"])).timestamp()
                out.total.append(arrived - started)
                out.to_admission.append(admitted - started)
                out.after_admission.append(arrived - admitted)
                return
        out.missed += 1


async def _open(redis_url: str) -> None:
    redis = AsyncRedis.from_url(redis_url)
    try:
        await EventStore(redis).set_state(EVENT, EventState.OPEN)
    finally:
        await redis.aclose()


def _measure(opts: Options, refiller: Refiller, count: int) -> Samples:
    out = Samples()
    for i in range(count):
        refiller.sample(out)
        # Irregular gaps, so samples do not fall into step with anyone's polling period.
        time.sleep(random.uniform(0.02, 0.12))
        if (i + 1) % 50 == 0:
            opts.say(f"refill: {i + 1} samples, p50 {out.p(out.total, 50):.1f} ms")
    return out


def run(opts: Options) -> list[Row]:
    queued = opts.size(100_000, 5_000, minimum=SLOTS * 2)
    samples = opts.size(300, 40, minimum=5)
    with stack(opts.workdir) as st:
        kafka.create_topics(st.bootstrap, (PING_TOPIC,))
        config = paused_event(EVENT, max_concurrent=SLOTS, rate=100, checkout_ttl_seconds=3600)
        asyncio.run(create_event(st.redis_url, config))
        opts.say(f"refill: queueing {queued:,} users behind {SLOTS} slots")
        fill(st.redis_url, EVENT, queued, prefix="refill-")
        client = Redis.from_url(st.redis_url)
        client.delete(keys.outbox(EVENT))
        admitter = st.admitter()
        consumer = st.consumer(WAITROOM_KAFKA_FETCH_MAX_WAIT_MS=str(FAST_FETCH_MS))
        refiller = Refiller(st)
        try:
            wait_until(lambda: bool(client.exists(keys.lock(EVENT))), 30, "the admitter lock")
            asyncio.run(_open(st.redis_url))
            refiller.collect(SLOTS, 60)
            hop = refiller.one_hop(max(20, samples // 3))
            pids = {"admitter": admitter.pid, "consumer": consumer.pid, "redis": st.redis_pid}
            window = CpuWindow({**pids, "broker": st.broker_pid}).start()
            cpu = time.process_time()
            with opts.profiled("refill", {"admitter": admitter.pid, "consumer": consumer.pid}):
                fast = _measure(opts, refiller, samples)
            client_cpu = (time.process_time() - cpu) / max(1e-9, time.monotonic() - window.started)
            window.stop()
            default = None
            if not opts.quick:
                opts.say("refill: again with the consumer's default fetch wait")
                consumer.stop()
                consumer = st.consumer()
                default = _measure(opts, refiller, samples // 3)
        finally:
            refiller.close()
            client.close()
    assert window.cores is not None
    notes: dict[str, object] = {
        "p99_ms": round(fast.p(fast.total, 99), 1),
        "p50_to_admission_ms": round(fast.p(fast.to_admission, 50), 1),
        "p50_admission_to_kafka_ms": round(fast.p(fast.after_admission, 50), 1),
        "p99_to_admission_ms": round(fast.p(fast.to_admission, 99), 1),
        "p99_admission_to_kafka_ms": round(fast.p(fast.after_admission, 99), 1),
        "samples": len(fast.total),
        "missed": fast.missed,
        "consumer_fetch_wait_ms": FAST_FETCH_MS,
        **{f"{k}_cpu": round(v, 3) for k, v in window.cores.items()},
    }
    if default is not None:
        notes["default_fetch_wait_p50_ms"] = round(default.p(default.total, 50), 1)
        notes["default_fetch_wait_p99_ms"] = round(default.p(default.total, 99), 1)
    p50, p99 = fast.p(fast.total, 50), fast.p(fast.total, 99)
    return [
        Row(
            bench="refill",
            name=f"slot refill p50 ({queued:,} queued, {SLOTS} slots full)",
            figure=p50,
            unit="ms",
            target=f"<= {TARGET_P50_MS:g} ms",
            met=p50 <= TARGET_P50_MS and fast.missed == 0,
            baseline=percentile(hop, 50) * 1000,
            baseline_name="p50 of one Kafka hop",
            notes=notes,
            client_cpu=client_cpu,
            machine_cpu=window.machine,
        ),
        Row(
            bench="refill",
            name="slot refill p99",
            figure=p99,
            unit="ms",
            target=f"<= {TARGET_P99_MS:g} ms",
            met=p99 <= TARGET_P99_MS and fast.missed == 0,
            baseline=percentile(hop, 99) * 1000,
            baseline_name="p99 of one Kafka hop",
            client_cpu=client_cpu,
            machine_cpu=window.machine,
        ),
    ]
