"""Status at depth: GetQueueStatus latency with a million users queued versus a thousand.

Both queues are built with the join script directly (see ``bench.fill``) and hold the same share
of holes (1% of users left while waiting), so a position costs its real ZCOUNT. One API process
answers both; the load generator sends a steady, moderate rate (open loop) of status calls for
sessions spread over the whole queue, alternating deep and shallow rounds so the machine's
noise falls on both alike.
"""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import dataclass

from redis.asyncio import Redis

from bench import load
from bench.cpu import CpuWindow
from bench.fill import create_event, fill, paused_event
from bench.procs import Proc, Stack, free_port, stack
from bench.report import Row
from bench.runner import Options, bucket_quantile, cpu_notes, drive, rpc_buckets
from shared import keys
from shared.scripts import Scripts

TARGET_P99_MS = 5.0
TARGET_RATIO = 1.5
RATE = 400  # status calls per second, all client processes together
CLIENTS = 2
SAMPLES = 2000  # sessions queried per queue
SHALLOW = 1000


async def _leave(redis_url: str, event_id: str, session_ids: list[str]) -> None:
    """Make holes; the outbox they and the joins left is deleted, as the relay would."""
    redis = Redis.from_url(redis_url)
    scripts = Scripts(redis)
    try:
        for start in range(0, len(session_ids), 50):
            chunk = session_ids[start : start + 50]
            await asyncio.gather(*(scripts.leave(event_id, sid) for sid in chunk))
        await redis.delete(keys.outbox(event_id))
    finally:
        await redis.aclose()


def _queue(opts: Options, redis_url: str, event_id: str, users: int) -> list[str]:
    """Fill ``event_id``; make 1% of users leave; return up to SAMPLES waiting session ids."""
    asyncio.run(create_event(redis_url, paused_event(event_id)))
    leavers = max(1, users // 100)
    # Sample enough users for the leavers and twice the queried, spread over the whole queue.
    every = max(1, users // (leavers + 2 * SAMPLES))
    filled = fill(redis_url, event_id, users, prefix=f"{event_id}-", sample_every=every)
    sampled = filled.sampled
    # Leavers are spread along the whole queue too, so holes lie before most queried tickets.
    gone = {sampled[i * len(sampled) // leavers] for i in range(min(leavers, len(sampled)))}
    asyncio.run(_leave(redis_url, event_id, sorted(gone)))
    waiting = [sid for sid in sampled if sid not in gone]
    opts.say(f"status: {event_id} has {filled.joined:,} joined, {len(gone):,} left")
    return waiting[:: max(1, len(waiting) // SAMPLES)][:SAMPLES]


def run(opts: Options) -> list[Row]:
    deep_users = opts.size(1_000_000, 50_000, minimum=1000)
    shallow_users = SHALLOW
    rounds = 2 if opts.quick else 5
    with stack(opts.workdir) as st:
        opts.say(f"status: filling {deep_users:,} deep and {shallow_users:,} shallow")
        deep = _queue(opts, st.redis_url, "deep", deep_users)
        shallow = _queue(opts, st.redis_url, "shallow", shallow_users)
        port, metrics_port, echo_port = free_port(), free_port(), free_port()
        api = st.api(port, WAITROOM_METRICS_PORT=str(metrics_port))
        echo = st.echo(echo_port)
        rounds_of: dict[str, list[Round]] = {"deep": [], "shallow": [], "echo": []}
        setups = (("deep", deep, port), ("shallow", shallow, port), ("echo", deep, echo_port))
        for name, sids, target in setups:
            # Not counted: the API's first second opens its Redis connections (about a
            # millisecond of blocked event loop each) and takes paths for the first time.
            _round(opts, st, f"{name}-warmup", sids, target, api, echo, metrics_port)
        for i in range(rounds):
            for name, sids, target in setups:
                done = _round(opts, st, f"{name}-{i}", sids, target, api, echo, metrics_port)
                rounds_of[name].append(done)
                opts.say(
                    f"status: {name} p50 {done.result.percentile(50):.2f} ms "
                    f"p99 {done.result.percentile(99):.2f} ms (server p99 <= "
                    f"{done.server_p99:g} ms, {done.result.rate:.0f}/s, other CPU "
                    f"{cpu_notes(done.window, done.result.client_cpu)['other_cpu']:.2f})"
                )
    deep_p99 = statistics.median(r.result.percentile(99) for r in rounds_of["deep"])
    shallow_p99 = statistics.median(r.result.percentile(99) for r in rounds_of["shallow"])
    quiet = min(rounds_of["deep"], key=lambda r: r.window.machine)
    notes: dict[str, object] = {
        "p50_deep_ms": _median(rounds_of["deep"], 50),
        "p50_shallow_ms": _median(rounds_of["shallow"], 50),
        "p99_per_round_deep_ms": [round(r.result.percentile(99), 1) for r in rounds_of["deep"]],
        "p99_per_round_shallow_ms": [
            round(r.result.percentile(99), 1) for r in rounds_of["shallow"]
        ],
        "echo_p50_ms": _median(rounds_of["echo"], 50),
        "echo_p99_ms": _median(rounds_of["echo"], 99),
        "server_p99_bucket_deep_ms": max(r.server_p99 for r in rounds_of["deep"]),
        "server_p99_bucket_shallow_ms": max(r.server_p99 for r in rounds_of["shallow"]),
        "rate_per_s": RATE,
        "errors": sum(r.result.errors for rs in rounds_of.values() for r in rs),
        **cpu_notes(quiet.window, quiet.result.client_cpu),
    }
    first_error = next(
        (r.result.first_error for rs in rounds_of.values() for r in rs if r.result.first_error),
        "",
    )
    if first_error:
        notes["first_error"] = first_error[:200]
    return [
        Row(
            bench="status",
            name=f"GetQueueStatus p99, {deep_users:,} queued (median of {rounds} rounds)",
            figure=deep_p99,
            unit="ms",
            baseline=shallow_p99,
            baseline_name=f"p99 with {shallow_users:,} queued",
            target=f"<= {TARGET_P99_MS:g} ms and <= {TARGET_RATIO:g}x shallow",
            met=deep_p99 <= TARGET_P99_MS and deep_p99 <= TARGET_RATIO * shallow_p99,
            client_cpu=quiet.result.client_cpu,
            machine_cpu=quiet.window.machine,
            notes=notes,
        )
    ]


def _round(
    opts: Options,
    st: Stack,
    name: str,
    sids: list[str],
    target: int,
    api: Proc,
    echo: Proc,
    metrics_port: int,
) -> Round:
    """One measured round of status calls against the API (or the echo, for the floor)."""
    server = echo if name.startswith("echo") else api
    plan = load.Plan(
        target=f"127.0.0.1:{target}",
        kind=load.STATUS,
        seconds=opts.seconds(4.0, 3.0),
        rate=RATE / CLIENTS,
        session_ids=sids,
    )
    label = f"status-{name}"
    before = rpc_buckets(metrics_port, "GetQueueStatus")
    pids = {"server": server.pid, "redis": st.redis_pid}
    result, window = drive(plan, CLIENTS, pids, opts, label, {"server": server.pid})
    after = rpc_buckets(metrics_port, "GetQueueStatus")
    server_p99 = 0.0 if server is echo else bucket_quantile(before, after, 0.99) * 1000
    return Round(result, window, server_p99)


@dataclass(frozen=True)
class Round:
    result: load.LoadResult
    window: CpuWindow
    server_p99: float  # ms, upper bound of the API's own histogram bucket


def _median(rounds: list[Round], p: float) -> float:
    return round(statistics.median(r.result.percentile(p) for r in rounds), 2)
