"""``waitroom event``: configure the events the waitroom guards."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from shared.cli import emit, json_option, with_redis
from shared.events import EventConfig, EventState, EventStore
from shared.scripts import Scripts
from shared.timefmt import format_ms

F = TypeVar("F", bound=Callable[..., Any])


def _describe(config: EventConfig, stats: Any = None) -> str:
    lines = [
        f"event {config.event_id}: {config.state.value}",
        f"  max in checkout   {config.max_concurrent}",
        f"  admission rate    {config.rate:g} users/s",
        f"  checkout slot     {config.checkout_ttl_seconds:g} s",
        f"  queued session    {config.session_ttl_seconds:g} s",
        f"  max queue length  {config.max_queue or 'unlimited'}",
        f"  updated           {format_ms(config.updated_ms)}",
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
        ]
        for name, kind, default, help_text in reversed(options):
            func = click.option(
                name,
                type=kind,
                default=default if defaults else None,
                show_default=defaults,
                help=help_text,
            )(func)
        return func

    return deco


def _changes(**options: Any) -> dict[str, Any]:
    names = {"checkout_ttl": "checkout_ttl_seconds", "session_ttl": "session_ttl_seconds"}
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

    async def go(scripts: Scripts) -> tuple[EventConfig, Any]:
        store = EventStore(scripts.redis, scripts)
        return await store.get(event_id), await store.stats(event_id)

    config, stats = with_redis(go)
    recovery = with_redis(lambda scripts: _recovery(scripts, event_id))
    data = {**config.to_json(), "stats": vars(stats), "recovery": recovery}
    emit(as_json, data, _describe(config, stats) + f"\n  recovery          {recovery['text']}")


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
