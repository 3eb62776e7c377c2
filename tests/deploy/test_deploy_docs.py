"""docs/operations.md stays true: every setting, every topic, every command it shows exists.

The settings table is written from `waitroom settings --json`. When a setting changes, run
``WAITROOM_WRITE_DOCS=1 python -m pytest tests/deploy/test_deploy_docs.py`` to rewrite it, and
read the diff.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import click
from deploy_support import ROOT

from shared import settings as settings_mod
from shared.kafka import default_topics
from waitroom_cli.main import cli

OPERATIONS = ROOT / "docs" / "operations.md"
BEGIN = "<!-- settings table: begin (generated from `waitroom settings --json`) -->"
END = "<!-- settings table: end -->"

# Which processes read each settings class.
READERS = {
    settings_mod.CommonSettings: "all",
    settings_mod.KafkaClientSettings: "admitter, consumer",
    settings_mod.ApiSettings: "api",
    settings_mod.AdmitterSettings: "admitter",
    settings_mod.ConsumerSettings: "consumer",
    settings_mod.KafkaTopicSettings: "admitter, consumer",
    settings_mod.TokenKeySettings: "api, admitter",
    settings_mod.EventServiceSettings: "api",
}

# Common settings that only some processes use.
READ_BY_FEWER = {"WAITROOM_JWT_SECRET": "api, admitter"}


def _cli_settings() -> list[dict[str, str]]:
    """What the installed command prints, the source of the table."""
    waitroom = [sys.executable, "-c", "from waitroom_cli.main import cli; cli()"]
    result = subprocess.run(
        [*waitroom, "settings", "--json"], capture_output=True, text=True, timeout=60, check=True
    )
    rows: list[dict[str, str]] = json.loads(result.stdout)
    return rows


def settings_table() -> str:
    readers = {
        name: who for cls, who in READERS.items() for name, _, _ in settings_mod.describe(cls)
    }
    readers.update(READ_BY_FEWER)
    lines = [
        BEGIN,
        "| Variable | Default | Read by | Meaning |",
        "|---|---|---|---|",
    ]
    for row in _cli_settings():
        default = f"`{row['default']}`" if row["default"] else "(empty)"
        meaning = row["help"].replace("|", "\\|")
        lines.append(
            f"| `{row['variable']}` | {default} | {readers[row['variable']]} | {meaning} |"
        )
    lines.append(END)
    return "\n".join(lines)


def _text() -> str:
    return OPERATIONS.read_text()


def test_settings_table_is_current() -> None:
    text = _text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    expected = settings_table()
    if text[start:end] != expected and os.environ.get("WAITROOM_WRITE_DOCS") == "1":
        OPERATIONS.write_text(text[:start] + expected + text[end:])
        text = _text()
        end = start + len(expected)
    assert text[start:end] == expected, (
        "the settings table in docs/operations.md is stale; rewrite it with "
        "WAITROOM_WRITE_DOCS=1 python -m pytest tests/deploy/test_deploy_docs.py"
    )


def test_every_setting_is_documented() -> None:
    text = _text()
    for cls in READERS:
        for name, _, _ in settings_mod.describe(cls):
            assert f"| `{name}` |" in text, f"{name} ({cls.__name__}) is missing from the doc"


def test_topic_table_lists_every_topic_with_its_partitions() -> None:
    consumer = settings_mod.load(settings_mod.ConsumerSettings, {})
    documented = dict(re.findall(r"^\| `([a-z.]+)` \| (\d+) \|", _text(), flags=re.MULTILINE))
    assert {k: int(v) for k, v in documented.items()} == default_topics(consumer)


def _command_lines() -> list[str]:
    """Every `waitroom ...` command in the doc's shell blocks."""
    blocks = re.findall(r"```sh\n(.*?)```", _text(), flags=re.DOTALL)
    lines = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split("#", 1)[0].strip()
            if command.startswith("waitroom "):
                lines.append(command)
    return lines


def test_every_command_shown_exists_with_its_options() -> None:
    lines = _command_lines()
    assert len(lines) >= 15
    for line in lines:
        words = shlex.split(line)[1:]
        command: click.Command = cli
        context = click.Context(cli)
        while isinstance(command, click.Group) and words and not words[0].startswith("-"):
            sub = command.get_command(context, words[0])
            assert sub is not None, f"{line!r}: no command {words[0]!r}"
            command, words = sub, words[1:]
            context = click.Context(command, parent=context)
        known = {opt for param in command.params for opt in param.opts}
        for word in words:
            if word.startswith("--"):
                assert word.split("=")[0] in known, f"{line!r}: {command.name} has no {word}"


def test_every_alert_is_explained() -> None:
    alerts = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()
    names = re.findall(r"- alert: (\w+)", alerts)
    headings = re.findall(r"^### (Waitroom\w+)$", _text(), flags=re.MULTILINE)
    assert sorted(names) == sorted(headings)
