"""Join throughput: JoinQueue calls per second against one and two API processes, versus echo.

The echo (``bench.echo``) is the same gRPC server setup answering from the request alone, driven
by the same load generator in the same run: ``join / echo`` is the share of the gRPC stack's
best that the waitroom keeps. Two API processes share one port (SO_REUSEPORT); each client
process opens several connections, which the kernel spreads over the listeners. Latency is then
measured at 80% of the one-process saturation rate, open loop.

Every call is a new user (a new place in the queue), on an open event with no admitter, so
every join also announces itself on the notify channel as it would while checkout has room.
"""

from __future__ import annotations

import asyncio

from bench import load
from bench.cpu import CpuWindow
from bench.fill import create_event
from bench.procs import Stack, free_port, stack
from bench.report import Row
from bench.runner import Options, cpu_notes, drive
from shared.events import EventConfig

TARGET_VS_ECHO = 0.6
TARGET_TWO_PROCESSES = 1.6
CLIENTS = 3
CONCURRENCY = 32  # calls in flight per client process
CHANNELS = 4  # connections per client process


def _saturate(
    opts: Options, port: int, event_id: str, pids: dict[str, int], seconds: float
) -> tuple[load.LoadResult, CpuWindow]:
    plan = load.Plan(
        target=f"127.0.0.1:{port}",
        kind=load.JOIN,
        seconds=seconds,
        concurrency=CONCURRENCY,
        event_id=event_id,
        prefix=f"{event_id}-",
        channels=CHANNELS,
    )
    result, window = drive(plan, CLIENTS, pids)
    if result.errors:
        opts.say(f"join: {result.errors} errors, first: {result.first_error[:300]}")
    opts.say(f"join: {event_id}: {result.rate:,.0f}/s, client CPU {result.client_cpu:.2f}")
    return result, window


def _api(st: Stack, processes: int) -> tuple[int, dict[str, int]]:
    port = free_port()
    pids = {f"api{i + 1}": st.api(port).pid for i in range(processes)}
    pids["redis"] = st.redis_pid
    return port, pids


def run(opts: Options) -> list[Row]:
    seconds = opts.seconds(10.0, 3.0)
    with stack(opts.workdir) as st:
        for event_id in ("one", "two", "latency"):
            asyncio.run(create_event(st.redis_url, EventConfig(event_id)))
        echo_port = free_port()
        echo = st.echo(echo_port)
        echo_result, echo_window = _saturate(opts, echo_port, "echo", {"echo": echo.pid}, seconds)
        echo.stop()

        port, pids = _api(st, 1)
        one, one_window = _saturate(opts, port, "one", pids, seconds)
        at = 0.8 * one.rate
        plan = load.Plan(
            target=f"127.0.0.1:{port}",
            kind=load.JOIN,
            seconds=seconds,
            rate=at / CLIENTS,
            event_id="latency",
            prefix="latency-",
            channels=CHANNELS,
        )
        steady, steady_window = drive(plan, CLIENTS, pids)
        opts.say(
            f"join: at {at:,.0f}/s p50 {steady.percentile(50):.1f} ms "
            f"p99 {steady.percentile(99):.1f} ms"
        )
        st.stop_procs()

        port, pids = _api(st, 2)
        two, two_window = _saturate(opts, port, "two", pids, seconds)
    return [
        Row(
            bench="join",
            name="JoinQueue/s, 1 API process",
            figure=one.rate,
            unit="/s",
            baseline=echo_result.rate,
            baseline_name="echo/s",
            target=f">= {TARGET_VS_ECHO:g}x echo",
            met=one.rate >= TARGET_VS_ECHO * echo_result.rate,
            client_cpu=one.client_cpu,
            machine_cpu=one_window.machine,
            notes={
                **cpu_notes(one_window, one.client_cpu),
                "echo_cpu": round(echo_window.of("echo"), 2),
                "echo_client_cpu": round(echo_result.client_cpu, 2),
                "echo_other_cpu": round(
                    echo_window.others([echo_window.of("echo"), echo_result.client_cpu]), 2
                ),
                "errors": one.errors + echo_result.errors,
            },
        ),
        Row(
            bench="join",
            name="JoinQueue/s, 2 API processes (one port)",
            figure=two.rate,
            unit="/s",
            baseline=one.rate,
            baseline_name="1 process",
            target=f">= {TARGET_TWO_PROCESSES:g}x one",
            met=two.rate >= TARGET_TWO_PROCESSES * one.rate,
            client_cpu=two.client_cpu,
            machine_cpu=two_window.machine,
            notes={**cpu_notes(two_window, two.client_cpu), "errors": two.errors},
        ),
        Row(
            bench="join",
            name=f"JoinQueue p99 at 80% of saturation ({at:,.0f}/s)",
            figure=steady.percentile(99),
            unit="ms",
            client_cpu=steady.client_cpu,
            machine_cpu=steady_window.machine,
            notes={
                "p50_ms": round(steady.percentile(50), 2),
                "achieved_per_s": round(steady.rate),
                "late": steady.late,
                "errors": steady.errors,
                **cpu_notes(steady_window, steady.client_cpu),
            },
        ),
    ]
