"""The ``waitroom`` command: one subcommand per process and per operator task."""

from __future__ import annotations

import click

from shared import settings as settings_mod
from waitroom_cli.common import emit, json_option
from waitroom_cli.event import event
from waitroom_cli.token import token

_SETTINGS_CLASSES = (
    settings_mod.CommonSettings,
    settings_mod.KafkaClientSettings,
    settings_mod.ApiSettings,
    settings_mod.AdmitterSettings,
    settings_mod.ConsumerSettings,
)


@click.group()
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
