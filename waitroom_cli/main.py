"""The ``waitroom`` command: one subcommand per process and per operator task."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import click

from shared import settings as settings_mod
from shared.cli import (
    RET_CONNECT,
    RET_SETTINGS,
    emit,
    fail,
    install_targets,
    json_option,
    redis_problem,
    target_options,
)
from waitroom_cli.event import event
from waitroom_cli.token import token

# Subcommands that live with their process; imported only when used, so `waitroom event list`
# does not pay for importing gRPC and Kafka.
_LAZY = {
    "api": "waitroom_api.cli:api",
    "admitter": "waitroom_admitter.cli:admitter",
    "consumer": "waitroom_consumer.cli:consumer",
    "checkout": "waitroom_consumer.cli:checkout",
    "dev": "waitroom_dev.cli:dev",
    "simulate": "waitroom_dev.cli:simulate",
    "kafka": "waitroom_cli.kafka:kafka",
    "top": "waitroom_cli.top:top",
    "recover": "waitroom_cli.recover:recover",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_LAZY])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _LAZY:
            module, _, attr = _LAZY[cmd_name].partition(":")
            command: Any = getattr(importlib.import_module(module), attr)
            return command  # type: ignore[no-any-return]
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        """The last line before a traceback: a bad setting or a Redis that cannot be talked
        to is a sentence and an exit code in every command, whichever code path met it."""
        try:
            return super().invoke(ctx)
        except settings_mod.SettingsError as exc:
            fail(str(exc), RET_SETTINGS)
        except Exception as exc:
            if not _is_redis_error(exc):
                raise
            problem = redis_problem(exc, settings_mod.load(settings_mod.CommonSettings))
            if problem is None:
                raise
            fail(problem, RET_CONNECT)


def _is_redis_error(exc: BaseException) -> bool:
    from redis.exceptions import RedisError

    return isinstance(exc, RedisError)


@click.group(cls=LazyGroup)
@target_options
@click.version_option(package_name="ticketbottle-waitroom")
@click.pass_context
def cli(
    ctx: click.Context, redis_url: str | None, kafka: str | None, env_file: Path | None
) -> None:
    """TicketBottle Waitroom: a fair queue in front of checkout.

    Commands find Redis and Kafka, in this order, from --redis-url/--kafka, the
    WAITROOM_REDIS_URL/WAITROOM_KAFKA_BOOTSTRAP_SERVERS variables, the settings file, a dev
    stack started here (`waitroom dev up`), or the defaults; they say on stderr which one they
    use when none was set explicitly.
    """
    try:
        install_targets(ctx, redis_url, kafka, env_file)
    except settings_mod.SettingsError as exc:
        fail(str(exc), RET_SETTINGS)


@cli.command(name="settings")
@json_option
def show_settings(as_json: bool) -> None:
    """Every WAITROOM_ variable: the value in effect, where it came from, and its meaning.

    Secrets are never shown, only whether they are set; URLs lose their password.
    """
    rows: list[dict[str, str]] = []
    problems: list[str] = []
    for cls in settings_mod.settings_classes():
        cls_rows, cls_problems = settings_mod.effective(cls)
        rows += cls_rows
        problems += cls_problems
    emit(as_json, rows, _table(rows))
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    if problems:
        raise SystemExit(RET_SETTINGS)


def _table(rows: list[dict[str, str]]) -> str:
    """Columns lined up; a value longer than 40 characters pushes only its own line."""
    name_w = max(len(r["variable"]) for r in rows)
    value_w = min(40, max(len(r["value"]) for r in rows))
    source_w = max(len(r["source"]) for r in rows)
    header = f"{'VARIABLE':<{name_w}}  {'VALUE':<{value_w}}  {'FROM':<{source_w}}  MEANING"
    lines = [header]
    for r in rows:
        value = r["value"] or "(empty)"
        lines.append(
            f"{r['variable']:<{name_w}}  {value:<{value_w}}  {r['source']:<{source_w}}  {r['help']}"
        )
    return "\n".join(lines)


cli.add_command(event)
cli.add_command(token)
