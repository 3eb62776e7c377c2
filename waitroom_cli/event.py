"""``waitroom event``: configure the events the waitroom guards."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from shared.cli import emit, json_option, with_redis
from shared.events import DrawInfo, EventConfig, EventState, EventStore
from shared.scripts import Scripts
from shared.timefmt import format_ms, parse_timestamp
from waitroom_cli.draw import draw_group

F = TypeVar("F", bound=Callable[..., Any])


def _describe(config: EventConfig, stats: Any = None, info: DrawInfo | None = None) -> str:
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
    """Create, change and inspect events."""


@event.command()
@click.argument("event_id")
@_settings_options(defaults=True)
@click.option("--paused", is_flag=True, help="Create it paused: joins accepted, nobody admitted.")
@json_option
def create(event_id: str, paused: bool, as_json: bool, **options: Any) -> None:
    """Create EVENT_ID with its settings."""
    state = EventState.PAUSED if paused else EventState.OPEN
    config = EventConfig(event_id, state=state, **_changes(**options))

    async def go(scripts: Scripts) -> EventConfig:
        return await EventStore(scripts.redis, scripts).create(config)

    created = with_redis(go)
    emit(as_json, created.to_json(), "created " + _describe(created))


@event.command()
@click.argument("event_id")
@_settings_options(defaults=False)
@json_option
def update(event_id: str, as_json: bool, **options: Any) -> None:
    """Change settings of EVENT_ID; takes effect at the admitter's next step."""
    changes = _changes(**options)

    async def go(scripts: Scripts) -> EventConfig:
        return await EventStore(scripts.redis, scripts).update(event_id, **changes)

    updated = with_redis(go)
    emit(as_json, updated.to_json(), "updated " + _describe(updated))


@event.command()
@click.argument("event_id")
@json_option
def show(event_id: str, as_json: bool) -> None:
    """Settings and live figures of EVENT_ID."""

    async def go(scripts: Scripts) -> tuple[EventConfig, Any, DrawInfo | None]:
        store = EventStore(scripts.redis, scripts)
        config = await store.get(event_id)
        return config, await store.stats(event_id), await store.draw_info(event_id)

    config, stats, info = with_redis(go)
    data = {**config.to_json(), "stats": vars(stats), "draw": vars(info) if info else None}
    emit(as_json, data, _describe(config, stats, info))


@event.command(name="list")
@json_option
def list_events(as_json: bool) -> None:
    """Every configured event with its state and queue."""

    async def go(scripts: Scripts) -> list[tuple[EventConfig, Any]]:
        store = EventStore(scripts.redis, scripts)
        return [(await store.get(e), await store.stats(e)) for e in await store.list_ids()]

    rows = with_redis(go)
    data = [{**c.to_json(), "stats": vars(s)} for c, s in rows]
    lines = [f"{'EVENT':<24} {'STATE':<7} {'WAITING':>9} {'CHECKOUT':>13} {'RATE/s':>8}"]
    lines += [
        f"{c.event_id:<24} {c.state.value:<7} {s.queue_length:>9} "
        f"{f'{s.in_checkout}/{c.max_concurrent}':>13} {c.rate:>8g}"
        for c, s in rows
    ]
    emit(as_json, data, "\n".join(lines) if rows else "no events configured")


def _state_command(name: str, state: EventState, help_text: str) -> click.Command:
    @click.argument("event_id")
    @json_option
    def command(event_id: str, as_json: bool) -> None:
        async def go(scripts: Scripts) -> EventConfig:
            return await EventStore(scripts.redis, scripts).set_state(event_id, state)

        config = with_redis(go)
        emit(as_json, config.to_json(), f"event {event_id} is now {config.state.value}")

    return click.command(name=name, help=help_text)(command)


event.add_command(_state_command("pause", EventState.PAUSED, "Keep accepting joins, admit nobody."))
event.add_command(_state_command("resume", EventState.OPEN, "Open EVENT_ID: join and admit."))
event.add_command(
    _state_command(
        "close", EventState.CLOSED, "Refuse new joins; those waiting are still admitted."
    )
)


event.add_command(draw_group)
