"""The ``waitroom`` command: one subcommand per process and per operator task."""

from __future__ import annotations

import importlib
from typing import Any

import click

from shared import settings as settings_mod
from shared.cli import emit, json_option
from waitroom_cli.event import event
from waitroom_cli.token import token

_SETTINGS_CLASSES = (
    settings_mod.CommonSettings,
    settings_mod.KafkaClientSettings,
    settings_mod.ApiSettings,
    settings_mod.AdmitterSettings,
    settings_mod.ConsumerSettings,
)


# Subcommands that live with their process; imported only when used, so `waitroom event list`
# does not pay for importing gRPC and Kafka.
_LAZY = {
    "api": "waitroom_api.cli:api",
    "admitter": "waitroom_admitter.cli:admitter",
    "consumer": "waitroom_consumer.cli:consumer",
    "checkout": "waitroom_consumer.cli:checkout",
    "dev": "waitroom_dev.cli:dev",
    "simulate": "waitroom_dev.cli:simulate",
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


@click.group(cls=LazyGroup)
@click.version_option(package_name="ticketbottle-waitroom")
def cli() -> None:
    """TicketBottle Waitroom: a fair queue in front of checkout."""


@cli.command(name="settings")
@json_option
def show_settings(as_json: bool) -> None:
    """Every WAITROOM_ variable, its default and meaning."""
    rows = [row for cls in _SETTINGS_CLASSES for row in settings_mod.describe(cls)]
    data = [{"variable": v, "default": d, "help": h} for v, d, h in rows]
    emit(as_json, data, "\n".join(f"{v}={d!s:<32} {h}" for v, d, h in rows))


cli.add_command(event)
cli.add_command(token)
