"""Every command, with every kind of bad setting or wrong endpoint: a sentence and an exit code,
never a traceback. The command tree is walked, so a command added later is covered too."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from shared.cli import RET_CONNECT, RET_SETTINGS
from waitroom_cli.main import cli

#: Commands that run until stopped (or start servers), left out where a setting is valid and
#: only its endpoint is wrong: they retry an outage by design, which their own tests cover.
LONG_RUNNING = {"api", "admitter", "consumer", "top"}
#: Commands that start a whole local stack or a rehearsal against it: never run here.
NEVER = {"dev up", "simulate"}

BAD_VALUES = {
    "not a URL": {"WAITROOM_REDIS_URL": "notaurl"},
    "a URL with a bad port": {"WAITROOM_REDIS_URL": "redis://localhost:port/0"},
    "an unknown log level": {"WAITROOM_LOG_LEVEL": "LOUD"},
    "not a number": {"WAITROOM_METRICS_PORT": "ninety"},
    "Kafka without a port": {"WAITROOM_KAFKA_BOOTSTRAP_SERVERS": "kafka.internal"},
}


def leaf_commands() -> list[tuple[str, click.Command]]:
    found = []

    def walk(group: click.Group, path: list[str]) -> None:
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            assert command is not None
            if isinstance(command, click.Group):
                if command.invoke_without_command:
                    found.append((" ".join([*path, name]), command))
                walk(command, [*path, name])
            else:
                found.append((" ".join([*path, name]), command))

    walk(cli, [])
    return [(name, command) for name, command in found if name not in NEVER]


#: Options without which a command refuses before it reads any setting.
NEEDED = {"event update": ["--rate", "5"], "event delete": ["--yes"], "recover": ["--all"]}


def arguments(name: str, command: click.Command) -> list[str]:
    """A value for each required argument: enough to get past parsing."""
    values = [
        # A file argument that must exist gets one (this file), so the command gets past parsing.
        __file__ if isinstance(p.type, click.Path) and p.type.exists else "x.y.z"
        for p in command.params
        if isinstance(p, click.Argument) and p.required
    ]
    return [*values, *NEEDED.get(name, [])]


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    """An HTTP server: what a Redis URL pointing at the wrong port finds."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{server.server_address[1]}/0"
    server.shutdown()
    server.server_close()


def run(name: str, command: click.Command, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    args = [*name.split(), *arguments(name, command)]
    if name.startswith("dev "):
        args += ["--state-dir", str(cwd / "no-stack")]
    base = {"WAITROOM_JWT_SECRET": "k" * 32, "WAITROOM_ENV_FILE": None}
    result = CliRunner().invoke(cli, args, env={**base, **env})  # type: ignore[dict-item]
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    assert not crashed, f"`waitroom {' '.join(args)}` crashed: {result.exception!r}"
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", sorted(BAD_VALUES))
def test_every_command_names_a_bad_setting(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = BAD_VALUES[kind]
    variable = next(iter(env))
    settled = []
    for name, command in leaf_commands():
        code, output = run(name, command, env, tmp_path)
        if name.startswith("dev "):  # reads no WAITROOM_ setting: only no traceback
            continue
        assert code == RET_SETTINGS, f"waitroom {name}: exit {code}\n{output}"
        assert output.count(f"error: {variable}=") == 1, output
        settled.append(name)
    assert {"event create", "event delete", "checkout complete", "token verify", "top"} <= set(
        settled
    )


@pytest.mark.timeout(300)
def test_every_command_says_when_redis_is_not_there_or_not_redis(
    http_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    endpoints = {
        "nothing listening": ("redis://127.0.0.1:1/0", "cannot reach Redis at"),
        "an HTTP server": (http_url, "is not a Redis server"),
    }
    for kind, (url, sentence) in endpoints.items():
        reached = []
        for name, command in leaf_commands():
            if name.split()[0] in LONG_RUNNING and name.split()[-1] != "check":
                continue
            code, output = run(name, command, {"WAITROOM_REDIS_URL": url}, tmp_path)
            if sentence in output:
                assert code == RET_CONNECT, f"{kind}: waitroom {name}: exit {code}\n{output}"
                assert output.count("error:") == 1, output
                reached.append(name)
        events = {f"event {n}" for n in ("create", "update", "show", "list", "pause", "resume")}
        assert events | {"event close", "event delete", "event history",
                         "admitter check", "consumer check"} <= set(reached), kind  # fmt: skip
