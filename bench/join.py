"""Join throughput: JoinQueue calls per second against one and two API processes, versus echo.

The echo (``bench.echo``) is the same gRPC server setup answering from the request alone, driven
by the same load generator in the same run: ``join / echo`` is the share of the gRPC stack's
best that the waitroom keeps. Two API processes share one port (SO_REUSEPORT); each client
process opens several connections, which the kernel spreads over the listeners. Latency is then
measured at 80% of the one-process saturation rate, open loop.

Every call is a new user (a new place in the queue) of an open event whose checkout is full, as
on a sale day once the queue has formed (a join then announces nothing: nobody could be
admitted). While checkout has room, each join also publishes the event id on the notify
channel, which every API process and admitter receives.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench import load
from bench.cpu import CpuWindow
from bench.fill import full_checkout_event
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
    servers = {k: v for k, v in pids.items() if k != "redis"}
    result, window = drive(plan, CLIENTS, pids, opts, f"join-{event_id}", servers)
    if result.errors:
        opts.say(f"join: {result.errors} errors, first: {result.first_error[:300]}")
    opts.say(
        f"join: {event_id}: {result.rate:,.0f}/s, server CPU "
        f"{sum(window.of(k) for k in servers):.2f}, client CPU {result.client_cpu:.2f}"
    )
    return result, window


def _api(st: Stack, processes: int) -> tuple[int, dict[str, int]]:
    port = free_port()
    pids = {f"api{i + 1}": st.api(port).pid for i in range(processes)}
    pids["redis"] = st.redis_pid
    return port, pids


@dataclass
class Best:
    """The best of several rounds: on a shared machine, the round least disturbed."""

    result: load.LoadResult | None = None
    window: CpuWindow | None = None

    def offer(self, result: load.LoadResult, window: CpuWindow) -> None:
        if self.result is None or result.rate > self.result.rate:
            self.result, self.window = result, window

    def get(self) -> tuple[load.LoadResult, CpuWindow]:
        assert self.result is not None and self.window is not None
        return self.result, self.window


def _ms_per_call(window: CpuWindow, result: load.LoadResult, names: list[str]) -> float:
    return 1000 * sum(window.of(n) for n in names) / result.rate if result.rate else 0.0


def run(opts: Options) -> list[Row]:
    seconds = opts.seconds(8.0, 3.0)
    rounds = 1 if opts.quick else 2
    best_echo, best_echo_redis, best_one, best_two = Best(), Best(), Best(), Best()
    with stack(opts.workdir) as st:
        for r in range(rounds):
            # Rounds alternate the three setups so the machine's noise falls on each alike;
            # one server at a time, since every API process hears every join's announcement.
            for event_id in (f"one{r}", f"two{r}"):
                full_checkout_event(st.redis_url, EventConfig(event_id))
            echo_port = free_port()
            echo = st.echo(echo_port)
            best_echo.offer(*_saturate(opts, echo_port, f"echo{r}", {"echo": echo.pid}, seconds))
            st.stop_procs()
            echo = st.echo(echo_port, redis=True)
            pids = {"echo": echo.pid, "redis": st.redis_pid}
            best_echo_redis.offer(*_saturate(opts, echo_port, f"echoredis{r}", pids, seconds))
            st.stop_procs()
            port, pids = _api(st, 1)
            one_now = _saturate(opts, port, f"one{r}", pids, seconds)
            best_one.offer(*one_now)
            if r == rounds - 1:
                # 80% of what this process just sustained, not of the best round: the
                # machine's noise moves the saturation point from one minute to the next.
                at = 0.8 * one_now[0].rate
                steady, steady_window = _steady(opts, st, port, pids, at, seconds)
            st.stop_procs()
            port, pids = _api(st, 2)
            best_two.offer(*_saturate(opts, port, f"two{r}", pids, seconds))
            st.stop_procs()
    echo_result, echo_window = best_echo.get()
    one, one_window = best_one.get()
    two, two_window = best_two.get()
    echo_redis, echo_redis_window = best_echo_redis.get()
    echo_ms = _ms_per_call(echo_window, echo_result, ["echo"])
    echo_redis_ms = _ms_per_call(echo_redis_window, echo_redis, ["echo"])
    join_ms = _ms_per_call(one_window, one, ["api1"])
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
                "api_cpu_ms_per_join": round(join_ms, 3),
                "echo_cpu_ms_per_call": round(echo_ms, 3),
                "ratio_per_cpu": round(echo_ms / join_ms, 2) if join_ms else 0,
                "echo_with_redis_ping_per_s": round(echo_redis.rate),
                "echo_with_redis_ping_cpu_ms_per_call": round(echo_redis_ms, 3),
                "echo_cpu": round(echo_window.of("echo"), 2),
                "echo_client_cpu": round(echo_result.client_cpu, 2),
                "echo_other_cpu": round(
                    echo_window.others([echo_window.of("echo"), echo_result.client_cpu]), 2
                ),
                "errors": one.errors + echo_result.errors,
                "rounds": rounds,
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
            notes={
                **cpu_notes(two_window, two.client_cpu),
                "api_cpu_ms_per_join": round(_ms_per_call(two_window, two, ["api1", "api2"]), 3),
                "errors": two.errors,
            },
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


def _steady(
    opts: Options, st: Stack, port: int, pids: dict[str, int], at: float, seconds: float
) -> tuple[load.LoadResult, CpuWindow]:
    """Open-loop joins at ``at`` per second."""
    full_checkout_event(st.redis_url, EventConfig("steady"))
    plan = load.Plan(
        target=f"127.0.0.1:{port}",
        kind=load.JOIN,
        seconds=seconds,
        rate=at / CLIENTS,
        event_id="steady",
        prefix="steady-",
        channels=CHANNELS,
    )
    steady, window = drive(plan, CLIENTS, pids)
    opts.say(
        f"join: at {at:,.0f}/s p50 {steady.percentile(50):.1f} ms "
        f"p99 {steady.percentile(99):.1f} ms"
    )
    return steady, window
