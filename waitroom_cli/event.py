"""``waitroom event``: configure the events the waitroom guards, and read who changed them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from shared import audit
from shared.audit import Actor
from shared.cli import KAFKA_VAR, RET_ERROR, announce, emit, fail, json_option, with_redis
from shared.errors import WaitroomError
from shared.events import DrawInfo, EventConfig, EventState, EventStats, EventStore
from shared.ids import validate_event_id, validate_id
from shared.scripts import DeleteResult, Scripts
from shared.timefmt import format_ms, now_ms, parse_timestamp
from waitroom_cli.draw import draw_group

F = TypeVar("F", bound=Callable[..., Any])


def _describe(
    config: EventConfig, stats: EventStats | None = None, info: DrawInfo | None = None
) -> str:
    idle = config.idle_timeout_seconds
    lines = [
        f"event {config.event_id}: {config.state.value}",
        f"  max in checkout   {config.max_concurrent}",
        f"  admission rate    {config.rate:g} users/s",
        f"  checkout slot     {config.checkout_ttl_seconds:g} s",
        f"  queued session    {config.session_ttl_seconds:g} s",
        f"  max queue length  {config.max_queue or 'unlimited'}",
        f"  updated           {format_ms(config.updated_ms)}",
        f"  opens at          {format_ms(config.opens_ms) or 'no scheduled opening'}",
        f"  idle timeout      {f'{idle:g} s' if idle else 'off'}",
        f"  joins per IP/min  {config.ip_joins_per_minute or 'unlimited'}",
        f"  live per IP       {config.ip_live_sessions or 'unlimited'}",
    ]
    if info is not None:
        entrants = "pre-queue open" if info.entrants is None else f"{info.entrants} entrants"
        drawn = f"drawn {format_ms(info.drawn_ms)}" if info.drawn_ms else "not drawn yet"
        lines += [
            f"  draw              {entrants}, {drawn} ({info.scheme})",
            f"  commitment        {info.commitment}",
            f"  seed              {info.seed or '(revealed at the draw)'}",
        ]
    if stats is not None:
        lines += [
            f"  waiting now       {stats.queue_length}",
            f"  in checkout now   {stats.in_checkout}",
            f"  outbox backlog    {stats.outbox_backlog}",
            f"  joined in total   {stats.tickets_issued}",
        ]
    return "\n".join(lines)


def _event_argument(func: F) -> F:
    """EVENT_ID, checked before anything touches Redis: any id `create` accepts, and any id
    an older release accepted, so such an event can still be shown, changed or deleted."""

    def convert(ctx: click.Context, param: click.Parameter, value: str) -> str:
        try:
            if ctx.command.name == "create":
                return validate_event_id(value)
            return validate_id("event_id", value)
        except WaitroomError as exc:
            fail(exc.message)

    return click.argument("event_id", callback=convert)(func)


def _by_option(func: F) -> F:
    return click.option(
        "--by",
        metavar="NAME",
        default=None,
        help="Who makes the change, for the audit trail (default: the OS user).",
    )(func)


def _settings_options(defaults: bool) -> Callable[[F], F]:
    """The per-event settings; ``create`` shows the defaults, ``update`` leaves unset ones."""

    def deco(func: F) -> F:
        base = EventConfig("x")
        options = [
            ("--max-concurrent", int, base.max_concurrent, "Most users in checkout at once."),
            ("--rate", float, base.rate, "Admission rate, users per second."),
            ("--checkout-ttl", float, base.checkout_ttl_seconds, "Checkout slot lifetime (s)."),
            ("--session-ttl", float, base.session_ttl_seconds, "Queued session lifetime (s)."),
            ("--max-queue", int, base.max_queue, "Most users waiting; 0 is unlimited."),
            (
                "--idle-timeout",
                float,
                base.idle_timeout_seconds,
                "Drop queued users absent this long when reached (s); 0 is off.",
            ),
            (
                "--ip-joins-per-minute",
                int,
                base.ip_joins_per_minute,
                "Joins per IP address per minute; 0 is unlimited.",
            ),
            (
                "--ip-live-sessions",
                int,
                base.ip_live_sessions,
                "Live sessions per IP address; 0 is unlimited.",
            ),
        ]
        for name, kind, default, help_text in reversed(options):
            func = click.option(
                name,
                type=kind,
                default=default if defaults else None,
                show_default=defaults,
                help=help_text,
            )(func)
        return click.option(
            "--opens-at",
            default=None,
            help="Scheduled opening (RFC 3339): joins before it wait in a pre-queue and get "
            "places by a verifiable draw; 'none' removes it (only while nobody waits).",
        )(func)

    return deco


def _opens_ms(text: str) -> int:
    if text.strip().lower() == "none":
        return 0
    try:
        return int(parse_timestamp(text).timestamp() * 1000)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r} is not an RFC 3339 time: {exc}") from None


def _changes(**options: Any) -> dict[str, Any]:
    names = {
        "checkout_ttl": "checkout_ttl_seconds",
        "session_ttl": "session_ttl_seconds",
        "idle_timeout": "idle_timeout_seconds",
    }
    if options.get("opens_at") is not None:
        options["opens_ms"] = _opens_ms(options.pop("opens_at"))
    return {names.get(k, k): v for k, v in options.items() if v is not None}


@click.group()
def event() -> None:
    """Create, change, inspect and delete events; every change is recorded (`history`)."""


@event.command()
@_event_argument
@_settings_options(defaults=True)
@click.option("--paused", is_flag=True, help="Create it paused: joins accepted, nobody admitted.")
@_by_option
@json_option
def create(event_id: str, paused: bool, by: str | None, as_json: bool, **options: Any) -> None:
    """Create EVENT_ID (letters, digits, '.', '_', '-') with its settings."""
    state = EventState.PAUSED if paused else EventState.OPEN
    config = EventConfig(event_id, state=state, **_changes(**options))

    async def go(scripts: Scripts) -> EventConfig:
        return await EventStore(scripts.redis, scripts).create(config, Actor.here("create", by))

    created = with_redis(go)
    emit(as_json, created.to_json(), "created " + _describe(created))


@event.command()
@_event_argument
@_settings_options(defaults=False)
@_by_option
@json_option
def update(event_id: str, by: str | None, as_json: bool, **options: Any) -> None:
    """Change settings of EVENT_ID; takes effect at the admitter's next step."""
    changes = _changes(**options)
    if not changes:
        fail(
            "nothing to update: give at least one of --max-concurrent, --rate, "
            "--checkout-ttl, --session-ttl, --max-queue, --opens-at, --idle-timeout, "
            "--ip-joins-per-minute, --ip-live-sessions"
        )

    async def go(scripts: Scripts) -> tuple[EventConfig, int]:
        store = EventStore(scripts.redis, scripts)
        return await store.change(event_id, Actor.here("update", by), **changes)

    updated, changed = with_redis(go)
    verb = "updated " if changed else "unchanged (it already had these values): "
    emit(as_json, {**updated.to_json(), "changed": changed}, verb + _describe(updated))


@event.command()
@_event_argument
@json_option
def show(event_id: str, as_json: bool) -> None:
    """Settings and live figures of EVENT_ID."""

    async def go(scripts: Scripts) -> tuple[EventConfig, EventStats, DrawInfo | None]:
        store = EventStore(scripts.redis, scripts)
        config = await store.get(event_id)
        return config, await store.stats(event_id), await store.draw_info(event_id)

    config, stats, info = with_redis(go)
    recovery = with_redis(lambda scripts: _recovery(scripts, event_id))
    data = {
        **config.to_json(),
        "stats": vars(stats),
        "draw": vars(info) if info else None,
        "recovery": recovery,
    }
    human = _describe(config, stats, info) + f"\n  recovery          {recovery['text']}"
    emit(as_json, data, human)


async def _recovery(scripts: Scripts, event_id: str) -> dict[str, str]:
    """Whether the event's Redis state is checked against Kafka (docs/reliability.md)."""
    probe = await scripts.restore_probe(event_id)
    if probe.recovery:
        state, text = "recovering", f"RECOVERING from Kafka, joins refused: {probe.recovery}"
    elif probe.verified or not probe.generation:
        state, text = "ok", "ok"
    else:
        state = "unchecked"
        text = "UNCHECKED: Redis restarted; joins refused until an admitter compares it with Kafka"
    return {"state": state, "text": text, "reason": probe.recovery}


@event.command(name="list")
@json_option
def list_events(as_json: bool) -> None:
    """Every configured event with its state and queue."""

    async def go(scripts: Scripts) -> list[tuple[EventConfig, EventStats]]:
        store = EventStore(scripts.redis, scripts)
        return [(c, await store.stats(c.event_id)) for c in await store.list_configs()]

    rows = with_redis(go)
    data = [{**c.to_json(), "stats": vars(s)} for c, s in rows]
    width = max([24, *(len(c.event_id) for c, _ in rows)])
    lines = [f"{'EVENT':<{width}} {'STATE':<7} {'WAITING':>9} {'CHECKOUT':>13} {'RATE/s':>8}"]
    lines += [
        f"{c.event_id:<{width}} {c.state.value:<7} {s.queue_length:>9} "
        f"{f'{s.in_checkout}/{c.max_concurrent}':>13} {c.rate:>8g}"
        for c, s in rows
    ]
    emit(as_json, data, "\n".join(lines) if rows else "no events configured")


def _state_command(name: str, state: EventState, help_text: str) -> click.Command:
    @_event_argument
    @click.option(
        "--reopen",
        is_flag=True,
        help="Allow this on a closed event (new users can join again).",
    )
    @_by_option
    @json_option
    def command(event_id: str, reopen: bool, by: str | None, as_json: bool) -> None:
        async def go(scripts: Scripts) -> tuple[EventConfig, int]:
            store = EventStore(scripts.redis, scripts)
            return await store.change(event_id, Actor.here(name, by), reopen=reopen, state=state)

        config, changed = with_redis(go)
        text = f"event {event_id} is now {config.state.value}"
        if not changed:
            text = f"event {event_id} was already {config.state.value}; nothing changed"
        emit(as_json, {**config.to_json(), "changed": changed}, text)

    return click.command(name=name, help=help_text)(command)


event.add_command(_state_command("pause", EventState.PAUSED, "Keep accepting joins, admit nobody."))
event.add_command(
    _state_command(
        "resume",
        EventState.OPEN,
        "Open EVENT_ID: join and admit. A closed event needs --reopen.",
    )
)
event.add_command(
    _state_command(
        "close", EventState.CLOSED, "Refuse new joins; those waiting are still admitted."
    )
)


@event.command()
@_event_argument
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
@click.option(
    "--force",
    is_flag=True,
    help="Delete even while users wait or hold checkout slots.",
)
@_by_option
@json_option
def delete(event_id: str, yes: bool, force: bool, by: str | None, as_json: bool) -> None:
    """Delete EVENT_ID and everything Redis holds for it: queue, sessions, outbox, audit trail,
    lock. Refused while anyone waits or is in checkout, unless --force."""

    async def look(scripts: Scripts) -> EventStats:
        store = EventStore(scripts.redis, scripts)
        await store.get(event_id)
        return await store.stats(event_id)

    stats = with_redis(look)
    held = (
        f"{stats.queue_length} waiting, {stats.in_checkout} in checkout, "
        f"{stats.outbox_backlog} messages not yet sent to Kafka"
    )
    if not yes and not click.confirm(
        f"Delete event {event_id} ({held})? This cannot be undone", err=True
    ):
        fail("not deleted")
    actor = Actor.here("delete", by)

    async def go(scripts: Scripts) -> DeleteResult:
        return await EventStore(scripts.redis, scripts).delete(event_id, force=force)

    result = with_redis(go)
    dropped = {
        "waiting": result.waiting,
        "in_checkout": result.in_checkout,
        "outbox": result.outbox,
    }
    if not result.deleted:
        fail(
            f"event {event_id} still has {result.waiting} waiting and {result.in_checkout} in "
            "checkout; close it and let them finish (`waitroom event show`), or pass --force "
            "to drop them",
            RET_ERROR,
        )
    entry = audit.deletion(event_id, actor, dropped, now_ms())
    published = _publish_deletion(entry)
    text = f"deleted event {event_id}"
    if any(dropped.values()):
        text += f" (dropped {held})"
    emit(as_json, {"deleted": True, "dropped": dropped, "published": published}, text)


def _publish_deletion(entry: audit.Entry) -> bool:
    """Send the deletion's audit record to Kafka; a warning, not a failure, when it cannot
    (the deletion is done either way)."""
    announce(KAFKA_VAR)
    problem = audit.publish(entry)
    if problem:
        click.echo(f"warning: the deletion was not published to {audit.TOPIC}: {problem}", err=True)
    return problem is None


@event.command()
@_event_argument
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
def history(event_id: str, limit: int, as_json: bool) -> None:
    """Who changed EVENT_ID, when, from where, and the old and new values (newest last)."""

    async def go(scripts: Scripts) -> list[audit.Entry]:
        return await audit.history(scripts.redis, event_id, limit)

    entries = with_redis(go)
    lines = [
        f"{format_ms(e.at_ms)}  {e.action:<7} by {e.by}@{e.host}  {e.describe_changes()}"
        for e in entries
    ]
    emit(
        as_json,
        [e.to_json() for e in entries],
        "\n".join(lines) if lines else f"no recorded changes of event {event_id}",
    )


event.add_command(draw_group)
