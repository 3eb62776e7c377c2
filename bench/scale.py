"""Costs as the work grows: each benchmark here is a curve, one row per point.

- ``events``: 1, 1,000 and 10,000 configured events, one busy and the rest idle, one
  ``waitroom admitter`` and one ``waitroom consumer``. Per point: the admitter's CPU while every
  event is idle (the busy one paused), then the slot refill latency of the busy event (measured
  as ``bench.refill`` does). Refill p99 with the most events is compared with one event's.
- ``streams``: 1,000, 10,000 and 50,000 open StreamQueuePosition calls on one ``waitroom api``.
  Per point: the API process's resident memory per open stream, then the p99 from an admission
  (100/s) to every affected stream showing it (measured as ``bench.fanout`` does).
- ``joins``: JoinQueue/s on one API process when every call joins one event, against calls
  spread over 100 events at once (each with checkout full, as on a sale day).

Every point starts from a fresh Redis and broker, so one point's leftovers never weigh on the
next.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from bench import fanout, kafka, load
from bench.cpu import CpuWindow
from bench.fill import create_event, fill, full_checkout_event, paused_event
from bench.load import percentile
from bench.procs import Stack, free_port, stack
from bench.refill import EVENT as BUSY
from bench.refill import SLOTS, Refiller, Samples
from bench.report import Row
from bench.runner import Options, cpu_notes, drive, wait_until
from bench.streams import StreamClients
from shared import keys
from shared.events import EventConfig, EventState, EventStore

EVENT_COUNTS = (1, 1_000, 10_000)
STREAM_COUNTS = (1_000, 10_000, 50_000)
JOIN_EVENTS = (1, 100)
REFILL_VS_ONE = 1.5  # target: refill p99 with the most events within this of one event's
IDLE_CORES = 0.05  # target: the admitter's CPU with every event idle
IDLE_SECONDS = 10.0
OWN_TIMEOUT = 180.0  # how long the admitter may take to own every event
#: Event locks held at this moment (one script, so the count is of one instant); ARGV[1] is the
#: key pattern.
_COUNT_LOCKS = """
local n, cursor = 0, '0'
repeat
  local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
  cursor = r[1]
  n = n + #r[2]
until cursor == '0'
return n
"""


# --- events -------------------------------------------------------------------------------


async def _create_idle(redis_url: str, count: int) -> None:
    """``count`` open events with nobody waiting, created 50 at a time."""
    redis = AsyncRedis.from_url(redis_url)
    store = EventStore(redis)
    try:
        names = [f"idle-{n}" for n in range(count)]
        for start in range(0, count, 50):
            part = names[start : start + 50]
            await asyncio.gather(*(store.create(EventConfig(name)) for name in part))
    finally:
        await redis.aclose()


def _owned(client: Redis) -> int:
    """Events the (only) admitter says it owns, from its heartbeat."""
    beats = client.hgetall(keys.ADMITTER_HEARTBEATS).values()
    return max((int(json.loads(raw).get("events", 0)) for raw in beats), default=0)


#: Most time one point's refill samples may take: an overloaded admitter makes each sample
#: wait its full timeout, and a curve should not take hours to say so.
SAMPLING_SECONDS = 90.0


def _refill_samples(opts: Options, refiller: Refiller, count: int) -> Samples:
    out = Samples()
    until = time.monotonic() + SAMPLING_SECONDS
    for _ in range(count):
        if time.monotonic() > until:
            opts.say(f"scale events: sampling stopped after {SAMPLING_SECONDS:g} s")
            break
        refiller.sample(out)
        time.sleep(0.02 + 0.1 * (len(out.total) % 7) / 7)  # irregular, as bench.refill
    return out


def _events_point(opts: Options, events: int, queued: int, samples: int) -> dict[str, float]:
    with stack(opts.workdir) as st:
        kafka.create_topics(st.bootstrap)
        config = paused_event(BUSY, max_concurrent=SLOTS, rate=100, checkout_ttl_seconds=3600)
        asyncio.run(create_event(st.redis_url, config))
        fill(st.redis_url, BUSY, queued, prefix="refill-")
        asyncio.run(_create_idle(st.redis_url, events - 1))
        client = Redis.from_url(st.redis_url)
        client.delete(keys.outbox(BUSY))
        admitter = st.admitter()
        consumer = st.consumer(WAITROOM_KAFKA_FETCH_MAX_WAIT_MS=str(10))
        refiller = Refiller(st)
        try:
            # An admitter that cannot hold every lock (10,000 events: its renewals fall behind
            # and locks run out while it takes others) is measured as it is, and says so.
            with contextlib.suppress(TimeoutError):
                wait_until(lambda: _owned(client) >= events, OWN_TIMEOUT, "every lock", 1)
            time.sleep(3)  # a few sweeps after the last lock was taken
            owned = client.eval(_COUNT_LOCKS, 0, keys.lock("*"))
            opts.say(f"scale events: {events:,}: measuring the admitter while all are idle")
            idle = CpuWindow({"admitter": admitter.pid, "redis": st.redis_pid}).start()
            with opts.profiled(f"scale-events-{events}", {"admitter": admitter.pid}):
                time.sleep(opts.seconds(IDLE_SECONDS, 4.0))
            idle.stop()
            asyncio.run(fanout.set_state(st.redis_url, EventState.OPEN, BUSY))
            window = CpuWindow({"admitter": admitter.pid, "consumer": consumer.pid}).start()
            try:
                refiller.collect(SLOTS, 120)
            except TimeoutError as exc:  # an admitter that never got to the busy event
                opts.say(f"scale events: {events:,}: {exc}; no refill measured")
                out = Samples(missed=samples)
            else:
                out = _refill_samples(opts, refiller, samples)
            window.stop()
        finally:
            refiller.close()
            client.close()
    return {
        "locks_held": float(owned),
        "idle_admitter_cpu": idle.of("admitter"),
        "idle_redis_cpu": idle.of("redis"),
        "idle_other_cpu": idle.others(idle.cores.values() if idle.cores else ()),
        "refill_p50_ms": out.p(out.total, 50) if out.total else float("inf"),
        "refill_p99_ms": out.p(out.total, 99) if out.total else float("inf"),
        "missed": out.missed,
        "samples": len(out.total),
        "admitter_cpu": window.of("admitter"),
        "consumer_cpu": window.of("consumer"),
        # Everything else busy while the refill samples ran (Redis, the broker, this client,
        # other benchmarks on the shared machine): what the latencies carry.
        "refill_other_cpu": window.others(window.cores.values() if window.cores else ()),
    }


def run_events(opts: Options) -> list[Row]:
    counts = sorted({max(1, round(n * opts.scale)) if n > 1 else 1 for n in EVENT_COUNTS})
    queued = opts.size(20_000, 2_000, minimum=SLOTS * 2)
    samples = opts.size(200, 30, minimum=5)
    points = {}
    for n in counts:
        opts.say(f"scale events: {n:,} events")
        points[n] = _events_point(opts, n, queued, samples)
    one, most = points[counts[0]], points[counts[-1]]
    rows = []
    for n, point in points.items():
        rows.append(
            Row(
                bench="events",
                name=f"slot refill p99 ({n:,} events, 1 busy)",
                figure=point["refill_p99_ms"],
                unit="ms",
                baseline=one["refill_p99_ms"],
                baseline_name="refill p99 with 1 event",
                target=f"<= {REFILL_VS_ONE:g}x 1 event" if n == counts[-1] else "(curve)",
                met=(point["refill_p99_ms"] <= REFILL_VS_ONE * one["refill_p99_ms"])
                if n == counts[-1]
                else None,
                notes={k: round(v, 3) for k, v in point.items()},
            )
        )
    rows.append(
        Row(
            bench="events",
            name=f"admitter CPU, {counts[-1]:,} idle events",
            figure=most["idle_admitter_cpu"],
            unit="cores",
            baseline=one["idle_admitter_cpu"],
            baseline_name="with 1 event",
            target=f"< {IDLE_CORES:g}",
            met=most["idle_admitter_cpu"] < IDLE_CORES,
            notes={f"{n}_events": round(p["idle_admitter_cpu"], 4) for n, p in points.items()},
        )
    )
    return rows


# --- streams ------------------------------------------------------------------------------


def _rss(pid: int) -> int:
    """Resident memory of a process, in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _streams_point(opts: Options, streams: int, seconds: float) -> dict[str, float]:
    with stack(opts.workdir) as st:
        kafka.create_topics(st.bootstrap)
        config = paused_event(
            fanout.EVENT, max_concurrent=1_000_000, rate=fanout.RATE, checkout_ttl_seconds=3600
        )
        asyncio.run(create_event(st.redis_url, config))
        filled = fill(st.redis_url, fanout.EVENT, streams, prefix="streamer-", sample_every=1)
        client = Redis.from_url(st.redis_url)
        client.delete(keys.outbox(fanout.EVENT))
        port = free_port()
        api = st.api(port)
        st.admitter()
        wait_until(lambda: bool(client.exists(keys.lock(fanout.EVENT))), 30, "the admitter lock")
        client.close()
        time.sleep(1)
        before = _rss(api.pid)
        opts.say(f"scale streams: opening {streams:,}")
        clients = StreamClients(
            f"127.0.0.1:{port}", filled.sampled, fanout.CLIENTS, fanout.CHANNELS
        )
        try:
            clients.wait_ready(600)
            time.sleep(2)
            opened = _rss(api.pid)
            window = CpuWindow({"api": api.pid}).start()
            clients.go.set()
            since_ms = time.time() * 1000
            asyncio.run(fanout.set_state(st.redis_url, EventState.OPEN))
            with opts.profiled(f"scale-streams-{streams}", {"api": api.pid}):
                time.sleep(seconds)
            asyncio.run(fanout.set_state(st.redis_url, EventState.PAUSED))
            window.stop()
            time.sleep(3)  # updates still on their way are late, not lost
            admissions = fanout.admissions_since(st.redis_url, streams, since_ms)
            results = clients.finish(admissions)
        finally:
            clients.close()
    lat = sorted(x for r in results for x in r.latencies)
    missed = sum(r.missed for r in results)
    p99 = percentile(lat, 99) if lat else float("inf")
    if missed and missed / (missed + len(lat)) > 0.01:
        p99 = float("inf")
    updates = sum(r.updates for r in results)
    return {
        "bytes_per_stream": (opened - before) / streams,
        "rss_before_mb": before / 2**20,
        "rss_open_mb": opened / 2**20,
        "update_p99_s": p99,
        "update_p50_s": percentile(lat, 50) if lat else float("inf"),
        "updates_per_s": updates / window.seconds,
        "api_cpu": window.of("api"),
        "missed": missed,
        "errors": sum(r.errors for r in results),
    }


def run_streams(opts: Options) -> list[Row]:
    counts = sorted({opts.size(n, n // 10, minimum=10) for n in STREAM_COUNTS})
    seconds = opts.seconds(15.0, 5.0)
    rows = []
    for n in counts:
        point = _streams_point(opts, n, seconds)
        notes = {k: round(v, 3) for k, v in point.items()}
        rows.append(
            Row(
                bench="streams",
                name=f"API memory per open stream ({n:,} streams)",
                figure=point["bytes_per_stream"],
                unit="B",
                target="(curve)",
                met=None,
                notes=notes,
            )
        )
        rows.append(
            Row(
                bench="streams",
                name=f"admission -> stream update p99 ({n:,} streams, {fanout.RATE}/s)",
                figure=point["update_p99_s"],
                unit="s",
                target="(curve)",
                met=None,
            )
        )
    return rows


# --- joins --------------------------------------------------------------------------------


def _join_rate(
    opts: Options, st: Stack, events: Sequence[str], seconds: float
) -> tuple[load.LoadResult, CpuWindow]:
    port = free_port()
    api = st.api(port)
    plan = load.Plan(
        target=f"127.0.0.1:{port}",
        kind=load.JOIN,
        seconds=seconds,
        concurrency=32,
        event_id=events[0],
        event_ids=events,
        prefix=f"{len(events)}ev-{time.monotonic_ns()}-",
        channels=4,
    )
    pids = {"api": api.pid, "redis": st.redis_pid}
    label = f"scale-joins-{len(events)}"
    result, window = drive(plan, 3, pids, opts, label, {"api": api.pid})
    st.stop_procs()
    return result, window


def run_joins(opts: Options) -> list[Row]:
    seconds = opts.seconds(8.0, 3.0)
    rounds = 1 if opts.quick else 2
    best: dict[int, tuple[load.LoadResult, CpuWindow]] = {}
    with stack(opts.workdir) as st:
        names = {n: [f"j{n}-{i}" for i in range(n)] for n in JOIN_EVENTS}
        for events in names.values():
            for event_id in events:
                full_checkout_event(st.redis_url, EventConfig(event_id, max_concurrent=10))
        for _ in range(rounds):  # alternated, so the machine's noise falls on both alike
            for n, events in names.items():
                result, window = _join_rate(opts, st, events, seconds)
                opts.say(f"scale joins: {n} events: {result.rate:,.0f}/s")
                if n not in best or result.rate > best[n][0].rate:
                    best[n] = (result, window)
    one = best[JOIN_EVENTS[0]][0].rate
    rows = []
    for n, (result, window) in best.items():
        rows.append(
            Row(
                bench="joins",
                name=f"JoinQueue/s, 1 API process, {n} event{'s' if n > 1 else ''} at once",
                figure=result.rate,
                unit="/s",
                baseline=one,
                baseline_name="1 event",
                target="(curve)",
                met=None,
                client_cpu=result.client_cpu,
                machine_cpu=window.machine,
                notes={
                    **cpu_notes(window, result.client_cpu),
                    "p99_ms": round(result.percentile(99), 1),
                    "errors": result.errors,
                    "api_cpu_ms_per_join": round(1000 * window.of("api") / result.rate, 3)
                    if result.rate
                    else 0.0,
                },
            )
        )
    return rows
