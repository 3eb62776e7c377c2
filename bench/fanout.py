"""Stream fan-out: 10,000 StreamQueuePosition streams on one API process while users are admitted
at 100 per second.

The streamers hold the first 10,000 places of an event; the admitter admits from the front at
the event's rate (100/s), so every admission moves every remaining stream. For each admission
and each stream it affects, the latency is from the admission (its time in Redis) to the first
update that stream received showing it (``bench.streams``). The API process's CPU seconds per
second come from /proc/PID/stat; "not saturated" means below 0.9 of a core, since one Python
process can use at most about one.
"""

from __future__ import annotations

import asyncio
import time

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from bench import kafka
from bench.cpu import CpuWindow
from bench.fill import create_event, fill, paused_event
from bench.load import percentile
from bench.procs import Stack, free_port, stack
from bench.report import Row
from bench.runner import Options, wait_until
from bench.streams import StreamClients
from shared import keys
from shared.events import EventState, EventStore
from shared.sessions import SessionRecord

EVENT = "fanout"
RATE = 100
TARGET_P99_S = 1.0
SATURATED_CORES = 0.9
CLIENTS = 3
CHANNELS = 10  # connections per client process


async def set_state(redis_url: str, state: EventState, event_id: str = EVENT) -> None:
    redis = AsyncRedis.from_url(redis_url)
    try:
        await EventStore(redis).set_state(event_id, state)
    finally:
        await redis.aclose()


def admissions_since(redis_url: str, streams: int, since_ms: float) -> list[tuple[int, float]]:
    """(ticket, admission time in s) of the streamers admitted since ``since_ms``."""
    client = Redis.from_url(redis_url)
    try:
        tickets = list(range(1, streams + 1))
        raw = client.hmget(keys.sessions(EVENT), tickets)
    finally:
        client.close()
    out = []
    for ticket, value in zip(tickets, raw, strict=True):
        if value is None:
            continue
        record = SessionRecord.decode(value, ticket)
        if record.admitted_ms and record.admitted_ms >= since_ms:
            out.append((ticket, record.admitted_ms / 1000))
    return out


def _echo_baseline(
    opts: Options, st: Stack, sids: list[str], seconds: float
) -> tuple[float, float]:
    """Updates/s the echo server pushes to the same streams with no work behind them (a pass
    over all of them every 0.1 s at most, like the API's watcher), and its CPU."""
    port = free_port()
    echo = st.echo(port)
    clients = StreamClients(f"127.0.0.1:{port}", sids, CLIENTS, CHANNELS)
    try:
        clients.wait_ready()
        time.sleep(1.5)  # the echo starts its passes once no stream opened for a second
        window = CpuWindow({"echo": echo.pid}).start()
        clients.go.set()
        time.sleep(min(seconds, 10.0))
        window.stop()
        results = clients.finish([])
    finally:
        clients.close()
        echo.stop()
    rate = sum(r.updates for r in results) / window.seconds
    opts.say(f"fanout: echo pushes {rate:,.0f} updates/s at {window.of('echo'):.2f} cores")
    return rate, window.of("echo")


def run(opts: Options) -> list[Row]:
    streams = opts.size(10_000, 2_000, minimum=10)
    seconds = opts.seconds(20.0, 8.0)
    with stack(opts.workdir) as st:
        kafka.create_topics(st.bootstrap)
        config = paused_event(EVENT, max_concurrent=1_000_000, rate=RATE, checkout_ttl_seconds=3600)
        asyncio.run(create_event(st.redis_url, config))
        filled = fill(st.redis_url, EVENT, streams, prefix="streamer-", sample_every=1)
        fill(st.redis_url, EVENT, streams // 2, prefix="behind-")
        client = Redis.from_url(st.redis_url)
        client.delete(keys.outbox(EVENT))
        port = free_port()
        api = st.api(port)
        st.admitter()
        wait_until(lambda: bool(client.exists(keys.lock(EVENT))), 30, "the admitter lock")
        client.close()
        opts.say(f"fanout: opening {streams:,} streams")
        clients = StreamClients(f"127.0.0.1:{port}", filled.sampled, CLIENTS, CHANNELS)
        try:
            clients.wait_ready()
            opts.say(f"fanout: admitting {RATE}/s for {seconds:g}s")
            window = CpuWindow({"api": api.pid, "redis": st.redis_pid}).start()
            clients.go.set()
            since_ms = time.time() * 1000
            asyncio.run(set_state(st.redis_url, EventState.OPEN))
            with opts.profiled("fanout", {"api": api.pid}):
                time.sleep(seconds)
            asyncio.run(set_state(st.redis_url, EventState.PAUSED))
            admitted_for = time.monotonic() - window.started
            window.stop()
            time.sleep(3)  # updates still on their way are not lost, only late
            admissions = admissions_since(st.redis_url, streams, since_ms)
            results = clients.finish(admissions)
        finally:
            clients.close()
        st.stop_procs()
        echo_rate, echo_cpu = _echo_baseline(opts, st, filled.sampled, seconds)
    assert window.cores is not None
    lat = sorted(x for r in results for x in r.latencies)
    missed = sum(r.missed for r in results)
    errors = sum(r.errors for r in results)
    client_cpu = sum(r.cpu for r in results) / max(r.seconds for r in results)
    api_cpu = window.of("api")
    updates_rate = sum(r.updates for r in results) / admitted_for
    p99 = percentile(lat, 99) if lat else float("inf")
    if missed and missed / (missed + len(lat)) > 0.01:
        p99 = float("inf")  # more than 1% never shown: the p99 is not in the data
    notes: dict[str, object] = {
        "p50_s": round(percentile(lat, 50), 3),
        "admitted": len(admissions),
        "admitted_per_s": round(len(admissions) / admitted_for, 1),
        "pairs_measured": len(lat),
        "missed": missed,
        "updates_per_s": round(updates_rate),
        "echo_updates_per_s": round(echo_rate),
        "echo_cpu": round(echo_cpu, 2),
        "api_cpu_us_per_update": round(1e6 * api_cpu / updates_rate) if updates_rate else 0,
        "redis_cpu": round(window.of("redis"), 2),
        "other_cpu": round(window.others([api_cpu, window.of("redis"), client_cpu]), 2),
        "stream_errors": errors,
    }
    first_error = next((r.first_error for r in results if r.first_error), "")
    if first_error:
        notes["first_error"] = first_error[:200]
    return [
        Row(
            bench="fanout",
            name=f"admission -> stream update p99 ({streams:,} streams, {RATE}/s)",
            figure=p99,
            unit="s",
            target=f"< {TARGET_P99_S:g} s",
            met=p99 < TARGET_P99_S and errors == 0,
            client_cpu=client_cpu,
            machine_cpu=window.machine,
            notes=notes,
        ),
        Row(
            bench="fanout",
            name="API process CPU while streaming",
            figure=api_cpu,
            unit="cores",
            baseline=echo_cpu * updates_rate / echo_rate if echo_rate else None,
            baseline_name="echo CPU for as many updates",
            target=f"< {SATURATED_CORES:g} (not saturated)",
            met=api_cpu < SATURATED_CORES,
            client_cpu=client_cpu,
            machine_cpu=window.machine,
        ),
    ]
