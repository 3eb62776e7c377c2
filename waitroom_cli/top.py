"""``waitroom top``: a live view of every event, refreshed in place (like ``rq info`` or Flower).

Per event: the queue, checkout against its cap, how fast the queue front moves against the
rate, how long the oldest waiter has waited, the outbox backlog; below, the consumer's lag per
checkout topic from its heartbeats. Plain ANSI (home the cursor, clear), so it works in any
terminal and over ssh; ``--json`` prints one snapshot for scripts.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import click

from shared import heartbeats, keys
from shared.cli import REDIS_VAR, RET_OK, announce, common_settings, emit, redis_problem
from shared.connections import redis_client
from shared.events import EventConfig, EventStore
from shared.scripts import Scripts
from shared.sessions import SessionRecord

_CLEAR = "\x1b[H\x1b[2J"


@dataclass
class EventRow:
    event_id: str
    state: str
    waiting: int
    in_checkout: int
    max_concurrent: int
    rate: float
    outbox: int
    oldest_wait_seconds: float | None
    head: int = field(repr=False)
    admitted_per_second: float | None = None


@dataclass
class Snapshot:
    at_ms: int
    events: list[EventRow]
    consumer_lag: dict[str, int]  # topic -> messages not yet committed, over fresh consumers
    consumers: int
    admitters: int


async def _oldest_wait(scripts: Scripts, event_id: str, now_ms: int) -> tuple[int, float | None]:
    """The queue front (head) and how long its first waiting user has waited, in seconds."""
    view = await scripts.queue_view(event_id)
    holes = set(view.holes)
    front = next((t for t in range(view.head, view.seq + 1) if t not in holes), None)
    if front is None or view.queue_length == 0:
        return view.head, None
    raw = await scripts.redis.hget(keys.sessions(event_id), str(front))
    if raw is None:
        return view.head, None
    record = SessionRecord.decode(raw, front)
    return view.head, max(0.0, (now_ms - record.queued_ms) / 1000)


async def _row(scripts: Scripts, store: EventStore, config: EventConfig, now_ms: int) -> EventRow:
    stats = await store.stats(config.event_id)
    head, oldest = await _oldest_wait(scripts, config.event_id, now_ms)
    return EventRow(
        event_id=config.event_id,
        state=config.state.value,
        waiting=stats.queue_length,
        in_checkout=stats.in_checkout,
        max_concurrent=config.max_concurrent,
        rate=config.rate,
        outbox=stats.outbox_backlog,
        oldest_wait_seconds=oldest,
        head=head,
    )


def _lag(beats: list[heartbeats.Beat], now_ms: int) -> tuple[dict[str, int], int]:
    """Lag per topic summed over fresh consumers (each reports its own partitions)."""
    total: dict[str, int] = {}
    fresh = [b for b in beats if b.fresh(now_ms=now_ms)]
    for beat in fresh:
        lag = beat.data.get("lag")
        if isinstance(lag, dict):
            for topic, n in lag.items():
                if isinstance(n, int):
                    total[str(topic)] = total.get(str(topic), 0) + n
    return total, len(fresh)


async def collect(scripts: Scripts) -> Snapshot:
    """One reading of every event and of the workers' heartbeats."""
    store = EventStore(scripts.redis, scripts)
    now = heartbeats.wall_ms()
    rows = [await _row(scripts, store, c, now) for c in await store.list_configs()]
    consumers = await heartbeats.read(scripts.redis, keys.CONSUMER_HEARTBEATS)
    admitters = await heartbeats.read(scripts.redis, keys.ADMITTER_HEARTBEATS)
    lag, live_consumers = _lag(consumers, now)
    live_admitters = sum(1 for b in admitters if b.fresh(now_ms=now))
    return Snapshot(now, rows, lag, live_consumers, live_admitters)


def with_rates(current: Snapshot, previous: Snapshot | None) -> Snapshot:
    """Fill in how fast each queue front moved since ``previous`` (users per second).

    The front (``head``) passes admitted users and, now and then, tickets of users who left
    or expired while waiting; those are few, so this is the admission rate to within them.
    """
    if previous is None:
        return current
    seconds = (current.at_ms - previous.at_ms) / 1000
    before = {row.event_id: row.head for row in previous.events}
    for row in current.events:
        if seconds > 0 and row.event_id in before:
            row.admitted_per_second = max(0, row.head - before[row.event_id]) / seconds
    return current


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def render(snapshot: Snapshot) -> str:
    """The screen: one line per event, then the workers."""
    width = max([12, *(len(r.event_id) for r in snapshot.events)])
    lines = [
        time.strftime("waitroom top  %Y-%m-%d %H:%M:%S", time.localtime(snapshot.at_ms / 1000)),
        "",
        f"{'EVENT':<{width}}  {'STATE':<6}  {'WAITING':>8}  {'CHECKOUT':>11}  "
        f"{'ADMITTED/s':>14}  {'OLDEST':>6}  {'OUTBOX':>6}",
    ]
    for r in snapshot.events:
        speed = "-" if r.admitted_per_second is None else f"{r.admitted_per_second:.1f}"
        lines.append(
            f"{r.event_id:<{width}}  {r.state:<6}  {r.waiting:>8}  "
            f"{f'{r.in_checkout}/{r.max_concurrent}':>11}  {f'{speed}/{r.rate:g}':>14}  "
            f"{_age(r.oldest_wait_seconds):>6}  {r.outbox:>6}"
        )
    if not snapshot.events:
        lines.append("no events configured")
    lag = ", ".join(f"{t} {n}" for t, n in sorted(snapshot.consumer_lag.items())) or "-"
    lines += [
        "",
        f"admitters alive {snapshot.admitters}   consumers alive {snapshot.consumers}   "
        f"consumer lag {lag}",
    ]
    return "\n".join(lines)


def frame(screen: str, terminal: bool) -> str:
    """On a terminal, redraw in place (cursor home, clear); piped, one frame after another
    with a blank line between, like ``top -b``."""
    return _CLEAR + screen if terminal else screen + "\n"


def to_json(snapshot: Snapshot) -> dict[str, Any]:
    data = asdict(snapshot)
    for row in data["events"]:
        row.pop("head")
    return data


@click.command()
@click.option(
    "--interval",
    type=click.FloatRange(min=0.2),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes (and the span --json measures admissions over).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one snapshot as JSON and exit.")
def top(interval: float, as_json: bool) -> None:
    """A live view of every event: queue, checkout against the cap, admissions against the
    rate, the oldest waiter, outbox backlog, consumer lag. Ctrl-C ends it."""
    config = common_settings()
    announce(REDIS_VAR)

    async def snapshot_twice(scripts: Scripts) -> Snapshot:
        first = await collect(scripts)
        await asyncio.sleep(interval)
        return with_rates(await collect(scripts), first)

    async def live(scripts: Scripts) -> None:
        previous: Snapshot | None = None
        while True:
            try:
                current = with_rates(await collect(scripts), previous)
                screen, previous = render(current), current
            except Exception as exc:
                problem = redis_problem(exc, config)
                if problem is None:
                    raise
                screen = f"waitroom top: {problem}; retrying every {interval:g} s"
            click.echo(frame(screen, sys.stdout.isatty()), color=True)
            await asyncio.sleep(interval)

    async def main() -> None:
        client = redis_client(config)
        try:
            scripts = Scripts(client)
            if as_json:
                emit(True, to_json(await snapshot_twice(scripts)), "")
            else:
                await live(scripts)
        finally:
            await client.aclose()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        raise SystemExit(RET_OK) from None
