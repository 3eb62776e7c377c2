"""``waitroom simulate``: the command line of the sale rehearsal."""

from __future__ import annotations

import asyncio
import faulthandler
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from shared.cli import RET_CONNECT, RET_ERROR, RET_INVALID, RET_OK, emit, fail, json_option
from waitroom_dev.simulate.progress import LiveProgress
from waitroom_dev.stack.state import DEFAULT_STATE_DIR, StackState

DEFAULT_TARGET = "127.0.0.1:50051"
#: How long past ``--timeout`` a run may take to close and report before it counts as hung.
HUNG_AFTER_SECONDS = 45.0


def _kafka_tuning(state: StackState | None) -> Any:
    from shared import settings

    tuning = settings.load(settings.KafkaClientSettings)
    if state is None or not state.kafka_client:
        return tuning
    names = {
        "WAITROOM_KAFKA_SESSION_TIMEOUT_MS": "session_timeout_ms",
        "WAITROOM_KAFKA_HEARTBEAT_INTERVAL_MS": "heartbeat_interval_ms",
        "WAITROOM_KAFKA_FETCH_MAX_WAIT_MS": "fetch_max_wait_ms",
    }
    values = {names[k]: v for k, v in state.kafka_client.items() if k in names}
    return settings.KafkaClientSettings(**{**vars(tuning), **values})


@click.command()
@click.option(
    "--target", help=f"gRPC address of the API [default: the dev stack's, else {DEFAULT_TARGET}]"
)
@click.option(
    "--redis-url",
    envvar="WAITROOM_REDIS_URL",
    help="Redis of the system under test [default: WAITROOM_REDIS_URL, else the dev stack's]",
)
@click.option(
    "--bootstrap",
    envvar="WAITROOM_KAFKA_BOOTSTRAP_SERVERS",
    help="Kafka bootstrap servers "
    "[default: WAITROOM_KAFKA_BOOTSTRAP_SERVERS, else the dev stack's]",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_STATE_DIR,
    show_default=True,
    help="The dev stack to read defaults from.",
)
@click.option(
    "--event", "event_id", help="Event to rehearse [default: the dev stack's demo event]."
)
@click.option("--users", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option(
    "--arrival",
    type=click.Choice(["burst", "ramp"]),
    default="burst",
    show_default=True,
    help="burst: everyone joins at once; ramp: users arrive steadily at --rate.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=100.0,
    show_default=True,
    help="Joins per second with --arrival ramp.",
)
@click.option(
    "--mode",
    type=click.Choice(["poll", "stream", "mixed"]),
    default="mixed",
    show_default=True,
    help="How users follow their status (mixed: half each).",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.05),
    default=2.0,
    show_default=True,
    help="Seconds between a polling user's status checks (+-20%).",
)
@click.option(
    "--complete",
    type=click.FloatRange(0, 1),
    default=0.8,
    show_default=True,
    help="Share of admitted users whose checkout completes.",
)
@click.option(
    "--fail",
    "fail_share",
    type=click.FloatRange(0, 1),
    default=0.1,
    show_default=True,
    help="Share whose checkout fails; the rest say nothing and their slot expires.",
)
@click.option(
    "--checkout-delay",
    type=(click.FloatRange(min=0), click.FloatRange(min=0)),
    default=(0.2, 1.0),
    show_default=True,
    metavar="MIN MAX",
    help="Seconds from admission to the checkout outcome, drawn uniformly.",
)
@click.option(
    "--channels",
    type=click.IntRange(1, 256),
    default=8,
    show_default=True,
    help="gRPC connections the users share.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    help="Give up after this many seconds; users not settled by then are lost.",
)
@click.option(
    "--opens-in",
    type=click.FloatRange(min=1),
    metavar="SECONDS",
    help="Rehearse a scheduled sale: set the event's opening this far ahead (a fresh event: "
    "nobody joined yet). Without it, an opening the event already has ahead is used.",
)
@click.option(
    "--before",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    metavar="SHARE",
    help="Share of users who arrive before the opening (over its first 80%), into the "
    "pre-queue; the rest arrive after it as --arrival says.",
)
@click.option(
    "--abandon",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    metavar="SHARE",
    help="Share of users who stop following right after joining; the event needs an idle "
    "timeout (waitroom event update --idle-timeout) to drop them.",
)
@click.option("--seed", type=int, help="Random seed, for a repeatable choice of outcomes.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Draw queue length, users in checkout and admission rate into this PNG.",
)
@json_option
def simulate(
    target: str | None,
    redis_url: str | None,
    bootstrap: str | None,
    state_dir: Path,
    event_id: str | None,
    fail_share: float,
    checkout_delay: tuple[float, float],
    plot: Path | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Rehearse an on-sale against a running waitroom and check it stayed fair and safe.

    With a scheduled opening (--opens-in, --before) it also checks the draw: the pre-queue
    got the first places, arrival order after it, and `waitroom event draw verify` agrees;
    with abandoning users (--abandon), that none was admitted after the event's idle
    timeout ran out. It reports the error of the wait estimated at join.

    Exits 0 when the run is clean (no FIFO violation, never over the checkout cap, nobody
    lost, the draw and the abandoned as the rules say), 4 otherwise.
    """
    from shared.settings import CommonSettings
    from waitroom_dev.simulate.checkout import CheckoutPlan
    from waitroom_dev.simulate.model import SimulationConfig
    from waitroom_dev.simulate.report import build, human
    from waitroom_dev.simulate.run import Simulation, SimulationError

    state = StackState.load(state_dir)
    defaults = CommonSettings()
    try:
        plan = CheckoutPlan(options.pop("complete"), fail_share, *checkout_delay).validate()
    except ValueError as exc:
        fail(str(exc))
        return
    config = SimulationConfig(
        target=target or (state.api_target if state else DEFAULT_TARGET),
        redis_url=redis_url or (state.redis_url if state else defaults.redis_url),
        bootstrap=bootstrap or (state.bootstrap if state else defaults.kafka_bootstrap_servers),
        event_id=event_id or (state.event_id if state else "concert1"),
        plan=plan,
        kafka=_kafka_tuning(state),
        **options,
    )
    progress = LiveProgress(live=sys.stderr.isatty() and not as_json)
    simulation = Simulation(config, progress, progress.every)
    started = time.monotonic()
    watchdog(config.timeout + HUNG_AFTER_SECONDS)
    try:
        data = asyncio.run(simulation.run())
    except SimulationError as exc:
        progress.end()
        fail(str(exc), RET_CONNECT if exc.unreachable else RET_ERROR)
        return
    progress.end()
    report = build(data)
    report["wall_seconds"] = round(time.monotonic() - started, 3)
    if plot is not None:
        from waitroom_dev.simulate.plot import plot as draw

        draw(report, plot)
        report["plot"] = str(plot)
    emit(as_json, report, human(report))
    sys.exit(RET_OK if report["clean"] else RET_INVALID)


def watchdog(seconds: float) -> threading.Timer:
    """Exit with ``RET_ERROR`` and every thread's stack if the process still runs ``seconds``
    from now: a run ends by its ``--timeout`` and then only closes and reports, so one still
    running is stuck (seen once in the test suite, silently, until its caller killed it)."""

    def fire() -> None:
        print(
            f"simulate: still running {seconds:g} s after it started, past --timeout: stuck; "
            "the stack of every thread follows",
            file=sys.stderr,
            flush=True,
        )
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(RET_ERROR)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    return timer
