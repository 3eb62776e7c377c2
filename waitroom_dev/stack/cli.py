"""``waitroom dev up|status|down``: the commands around the dev stack."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import click

from shared.cli import RET_ERROR, RET_INVALID, RET_OK, emit, fail, json_option
from waitroom_dev.stack.down import stop_stack
from waitroom_dev.stack.options import StackError, StackOptions
from waitroom_dev.stack.state import DEFAULT_STATE_DIR, StackState, is_ours
from waitroom_dev.stack.up import DevStack

state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_STATE_DIR,
    show_default=True,
    help="Where the stack keeps its config, logs and state file.",
)


@click.group()
def dev() -> None:
    """Run the whole waitroom on this machine: Redis, Kafka, API, admitters, consumer."""


@dev.command()
@state_dir_option
@click.option("--event", "event_id", default="concert1", show_default=True, help="Demo event.")
@click.option(
    "--max-concurrent",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Demo event: most users in checkout at once.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=50.0,
    show_default=True,
    help="Demo event: users admitted per second.",
)
@click.option(
    "--checkout-ttl",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Demo event: checkout slot lifetime (s).",
)
@click.option(
    "--admitters",
    type=click.IntRange(1, 16),
    default=2,
    show_default=True,
    help="Admitter processes.",
)
@click.option(
    "--partitions",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Partitions per Kafka topic.",
)
@click.option("--redis-port", type=click.IntRange(1, 65535), default=6379, show_default=True)
@click.option("--kafka-port", type=click.IntRange(1, 65535), default=9092, show_default=True)
@click.option("--api-port", type=click.IntRange(1, 65535), default=50051, show_default=True)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=9400,
    show_default=True,
    help="First metrics port; each process takes the next one.",
)
@click.option("--free-ports", is_flag=True, help="Pick free ports for everything instead.")
def up(state_dir: Path, **options: Any) -> None:
    """Start everything and stay in the foreground; Ctrl-C or SIGTERM stops it all."""
    stack = DevStack(StackOptions(state_dir=state_dir, **options))
    existing = StackState.load(state_dir)
    if existing is not None and is_ours(existing.pid, "waitroom"):
        hint = f"stop it with `waitroom dev down --state-dir {state_dir}`"
        fail(f"a dev stack already runs from {state_dir} (pid {existing.pid}); {hint}")
    if existing is not None:
        say(f"cleaning up what an earlier stack (pid {existing.pid}) left running")
        try:
            stop_stack(existing, timeout=15)
        except StackError as exc:
            fail(str(exc))

    stop = threading.Event()
    signals = 0

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal signals
        signals += 1
        stop.set()
        if signals > 1:
            stack.hurry.set()  # a second Ctrl-C: do not wait for drains

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    code = RET_OK
    try:
        state = stack.start()
        if not stop.is_set() and stack.wait_ready(stop):
            say(ready_banner(stack, state))
        while not stop.wait(0.5):
            problem = stack.dead_component()
            if problem:
                say(f"error: {problem}", err=True)
                code = RET_ERROR
                break
            for warning in stack.check_programs():
                say(f"warning: {warning}", err=True)
    except Exception as exc:  # any failure to start: report it, then stop what did start
        say(f"error: {exc}", err=True)
        code = RET_ERROR
    finally:
        say("stopping the dev stack ...")
        stack.stop()
        say("stopped; nothing left running")
    sys.exit(code)


def say(text: str, *, err: bool = False) -> None:
    """Print a line, or drop it when nobody reads any more.

    After Ctrl-C on ``waitroom dev up | tee log`` the pipe's reader is gone and every write
    raises; stopping the stack must never depend on being able to report it.
    """
    try:
        click.echo(text, err=err)
    except OSError:  # BrokenPipeError, or EIO from a terminal that went away
        _discard(sys.stderr if err else sys.stdout)


def _discard(stream: TextIO) -> None:
    """Point ``stream`` at /dev/null, so neither later writes nor the flush at exit fail again
    (the recipe in Python's signal documentation)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)


def ready_banner(stack: DevStack, state: StackState) -> str:
    opts = stack.options
    metrics = "\n".join(
        f"    {name:<12} http://127.0.0.1:{port}/metrics" for name, port in state.metrics.items()
    )
    pids = ", ".join(f"{name} {pid}" for name, pid in stack.program_pids.items())
    where = (
        ""
        if Path(state.state_dir) == DEFAULT_STATE_DIR.resolve()
        else (f" --state-dir {state.state_dir}")
    )
    join = f'{{"user_id":"user1","event_id":"{opts.event_id}"}}'
    secret = ""
    if stack.secret_path.exists():
        secret = f' WAITROOM_JWT_SECRET="$(cat {stack.secret_path})"'
    topics = f"topics {', '.join(stack.topics_created) or 'already there'}; "
    topics += f"{opts.partitions} partitions each"
    exports = f"WAITROOM_REDIS_URL={state.redis_url} "
    exports += f"WAITROOM_KAFKA_BOOTSTRAP_SERVERS={state.bootstrap}{secret}"
    return f"""\
waitroom dev stack is ready (state and logs in {state.state_dir})
  gRPC API       {state.api_target}
  Redis          {state.redis_url}
  Kafka          {state.bootstrap}  ({topics})
  demo event     {opts.event_id}: {opts.max_concurrent} in checkout at once, \
{opts.rate:g} admitted/s, {opts.checkout_ttl:g} s checkout slot
  metrics
{metrics}
  processes      {pids} (supervisord {state.supervisord_pid}; conf {state.conf})
Try it:
  grpcurl -plaintext -d '{join}' {state.api_target} waitroom.v1.WaitroomService/JoinQueue
  waitroom simulate{where} --users 1000      # rehearse a sale
  waitroom dev status{where}                 # from another terminal
  export {exports}
      # then `waitroom event list`, `waitroom checkout complete SESSION_ID`, `waitroom token verify`
Ctrl-C stops everything."""


@dev.command()
@state_dir_option
@json_option
def status(state_dir: Path, as_json: bool) -> None:
    """The dev stack's processes and services, and whether each is up."""
    from waitroom_dev.stack.status import collect, describe

    state = StackState.load(state_dir)
    if state is None:
        fail(f"no dev stack in {state_dir} (start one with `waitroom dev up`)")
        return
    report = collect(state)
    emit(as_json, report, describe(report))
    sys.exit(RET_OK if report["healthy"] else RET_INVALID)


@dev.command()
@state_dir_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds to wait for an orderly stop before killing.",
)
def down(state_dir: Path, timeout: float) -> None:
    """Stop a dev stack started in another terminal."""
    state = StackState.load(state_dir)
    if state is None:
        fail(f"no dev stack in {state_dir}")
        return
    try:
        stop_stack(state, timeout)
    except StackError as exc:
        fail(str(exc))
    click.echo(f"stopped the dev stack of {state_dir}")
