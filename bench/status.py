"""Status at depth: GetQueueStatus latency with a million users queued versus a thousand.

Both queues are built with the join script directly (see ``bench.fill``) and hold the same share
of holes (1% of users left while waiting), so a position costs its real ZCOUNT. One API process
answers both; the load generator sends a steady, moderate rate (open loop) of status calls for
sessions spread over the whole queue, alternating deep and shallow rounds so the machine's
noise falls on both alike.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from bench import load
from bench.fill import create_event, fill, paused_event
from bench.procs import free_port, stack
from bench.report import Row
from bench.runner import Options, cpu_notes, drive
from shared import keys
from shared.scripts import Scripts

TARGET_P99_MS = 5.0
TARGET_RATIO = 1.5
RATE = 400  # status calls per second, all client processes together
CLIENTS = 2
SAMPLES = 2000  # sessions queried per queue


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
    every = max(1, users // (2 * SAMPLES))
    filled = fill(redis_url, event_id, users, prefix=f"{event_id}-", sample_every=every)
    # Leavers are taken from the whole sample too, so holes lie all along the queue.
    sampled = filled.sampled
    leavers = max(1, users // 100)
    step = max(1, len(sampled) // leavers)
    gone = set(sampled[::step][:leavers]) if leavers < len(sampled) else set(sampled[::2])
    asyncio.run(_leave(redis_url, event_id, sorted(gone)))
    waiting = [sid for sid in sampled if sid not in gone]
    opts.say(f"status: {event_id} has {filled.joined:,} joined, {len(gone):,} left")
    return waiting[:: max(1, len(waiting) // SAMPLES)][:SAMPLES]


def run(opts: Options) -> list[Row]:
    deep_users = opts.size(1_000_000, 100_000, minimum=1000)
    shallow_users = opts.size(1000, 1000, minimum=100)
    rounds = 3 if not opts.quick else 1
    seconds = opts.seconds(5.0, 3.0)
    with stack(opts.workdir) as st:
        opts.say(f"status: filling {deep_users:,} deep and {shallow_users:,} shallow")
        deep = _queue(opts, st.redis_url, "deep", deep_users)
        shallow = _queue(opts, st.redis_url, "shallow", shallow_users)
        port = free_port()
        api = st.api(port)
        pids = {"api": api.pid, "redis": st.redis_pid}
        results: dict[str, list[load.LoadResult]] = {"deep": [], "shallow": []}
        windows = []
        for _ in range(rounds):
            for name, sids in (("deep", deep), ("shallow", shallow)):
                plan = load.Plan(
                    target=f"127.0.0.1:{port}",
                    kind=load.STATUS,
                    seconds=seconds,
                    rate=RATE / CLIENTS,
                    session_ids=sids,
                )
                label = f"status-{name}-{len(results[name])}"
                result, window = drive(plan, CLIENTS, pids, opts, label, {"api": api.pid})
                results[name].append(result)
                windows.append((window, result.client_cpu))
                opts.say(
                    f"status: {name} p50 {result.percentile(50):.2f} ms "
                    f"p99 {result.percentile(99):.2f} ms ({result.rate:.0f}/s)"
                )
    deep_all = _merge(results["deep"])
    shallow_all = _merge(results["shallow"])
    p99_deep, p99_shallow = deep_all.percentile(99), shallow_all.percentile(99)
    window, client_cpu = max(windows, key=lambda w: w[0].machine)
    notes: dict[str, object] = {
        "p50_deep_ms": round(deep_all.percentile(50), 2),
        "p50_shallow_ms": round(shallow_all.percentile(50), 2),
        "rate_per_s": RATE,
        "errors": deep_all.errors + shallow_all.errors,
        "late": deep_all.late + shallow_all.late,
        **cpu_notes(window, client_cpu),
    }
    if deep_all.first_error or shallow_all.first_error:
        notes["first_error"] = (deep_all.first_error or shallow_all.first_error)[:200]
    return [
        Row(
            bench="status",
            name=f"GetQueueStatus p99, {deep_users:,} queued",
            figure=p99_deep,
            unit="ms",
            baseline=p99_shallow,
            baseline_name=f"p99 with {shallow_users:,} queued",
            target=f"<= {TARGET_P99_MS:g} ms and <= {TARGET_RATIO:g}x shallow",
            met=p99_deep <= TARGET_P99_MS and p99_deep <= TARGET_RATIO * p99_shallow,
            client_cpu=client_cpu,
            machine_cpu=window.machine,
            notes=notes,
        )
    ]


def _merge(parts: list[load.LoadResult]) -> load.LoadResult:
    return load.LoadResult(
        processes=parts[0].processes,
        done=sum(p.done for p in parts),
        errors=sum(p.errors for p in parts),
        late=sum(p.late for p in parts),
        seconds=sum(p.seconds for p in parts),
        client_cpu=sum(p.client_cpu * p.seconds for p in parts) / sum(p.seconds for p in parts),
        latencies=sorted(x for p in parts for x in p.latencies),
        first_error=next((p.first_error for p in parts if p.first_error), ""),
    )
