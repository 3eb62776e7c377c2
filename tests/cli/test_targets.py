"""Where a command points: flags, variables, the settings file, a running dev stack, the
default, and a sentence on stderr whenever nobody chose explicitly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from shared.cli import RET_CONNECT, RET_SETTINGS
from waitroom_cli.main import cli

# Variables that would choose a target for the command under test; each test sets its own.
_UNSET: dict[str, str | None] = {
    "WAITROOM_REDIS_URL": None,
    "WAITROOM_KAFKA_BOOTSTRAP_SERVERS": None,
    "WAITROOM_ENV_FILE": None,
}


def run(*args: str, **env: str | None) -> Result:
    return CliRunner().invoke(cli, list(args), env={**_UNSET, **env})


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory: no dev stack state unless a test writes one."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def dev_stack_process() -> Iterator[int]:
    """A live process whose command line names waitroom, standing in for `waitroom dev up`."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "waitroom-dev-up-stand-in"]
    )
    yield proc.pid
    proc.kill()
    proc.wait()


def write_state(directory: Path, pid: int, redis_url: str, bootstrap: str) -> None:
    """The fields of waitroom_dev's StackState that say where the stack is."""
    state_dir = directory / ".waitroom-dev"
    state_dir.mkdir()
    state = {"pid": pid, "state_dir": str(state_dir), "redis_url": redis_url,
             "bootstrap": bootstrap, "event_id": "concert1"}  # fmt: skip
    (state_dir / "stack.json").write_text(json.dumps(state))


def test_the_default_is_named_on_stderr_and_its_failure_says_where_it_came_from(
    here: Path,
) -> None:
    result = run("--redis-url", "redis://127.0.0.1:1/0", "event", "list")
    assert result.exit_code == RET_CONNECT
    assert "note:" not in result.stderr  # a flag is an explicit choice
    assert "redis://127.0.0.1:1/0 (from flag --redis-url)" in result.stderr

    default = run("event", "list", WAITROOM_REDIS_URL=None)
    assert "note: using Redis at redis://127.0.0.1:6379/0 (the default)" in default.stderr
    assert "set WAITROOM_REDIS_URL or `waitroom --redis-url`" in default.stderr


def test_a_running_dev_stack_is_found_and_named(
    here: Path, redis_url: str, dev_stack_process: int
) -> None:
    write_state(here, dev_stack_process, redis_url, "127.0.0.1:1")
    found = run("event", "create", "devstack-1", "--json")
    assert found.exit_code == 0, found.output
    assert f"note: using Redis at {redis_url} (the dev stack in .waitroom-dev)" in found.stderr
    assert json.loads(found.stdout)["event_id"] == "devstack-1"
    # An explicit variable wins, silently.
    explicit = run("event", "list", WAITROOM_REDIS_URL="redis://127.0.0.1:1/0")
    assert explicit.exit_code == RET_CONNECT and "note:" not in explicit.stderr
    # The flag wins over both.
    flagged = run("--redis-url", redis_url, "event", "list", WAITROOM_REDIS_URL="redis://x:1")
    assert flagged.exit_code == 0 and "devstack-1" in flagged.stdout
    listed = run("settings", "--json")
    sources = {row["variable"]: row["source"] for row in json.loads(listed.stdout)}
    assert sources["WAITROOM_REDIS_URL"] == "the dev stack in .waitroom-dev"
    assert sources["WAITROOM_KAFKA_BOOTSTRAP_SERVERS"] == "the dev stack in .waitroom-dev"


def test_a_dev_stack_that_is_gone_is_not_used(here: Path, redis_url: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass", "waitroom"])
    proc.wait()
    write_state(here, proc.pid, redis_url, "127.0.0.1:1")
    result = run("event", "list", WAITROOM_REDIS_URL=None)
    assert "(the default)" in result.stderr and "dev stack" not in result.stderr


def test_the_settings_file_is_read_below_the_environment(here: Path, redis_url: str) -> None:
    env_file = here / "waitroom.env"
    env_file.write_text(
        "# the host's settings\n"
        f"WAITROOM_REDIS_URL={redis_url}\n"
        "export WAITROOM_LOG_LEVEL='debug'\n"
        "WAITROOM_JWT_SECRET=0123456789abcdef0123456789abcdef-not-shown\n"
    )
    listed = run("--env-file", str(env_file), "settings", "--json")
    assert listed.exit_code == 0, listed.output
    rows = {row["variable"]: row for row in json.loads(listed.stdout)}
    assert rows["WAITROOM_REDIS_URL"]["source"] == f"file {env_file}"
    assert rows["WAITROOM_LOG_LEVEL"]["value"] == "debug"
    assert rows["WAITROOM_JWT_SECRET"]["value"] == "(set)"
    assert rows["WAITROOM_JWT_SECRET"]["source"] == f"file {env_file}"
    assert "not-shown" not in listed.output
    assert rows["WAITROOM_API_ADDR"]["source"] == "default"
    # The environment wins over the file, and WAITROOM_ENV_FILE names the file too.
    both = run("settings", "--json", WAITROOM_ENV_FILE=str(env_file), WAITROOM_LOG_LEVEL="ERROR")
    levels = {row["variable"]: row for row in json.loads(both.stdout)}["WAITROOM_LOG_LEVEL"]
    assert levels == {**levels, "value": "ERROR", "source": "environment"}
    used = run("event", "list", WAITROOM_ENV_FILE=str(env_file))
    assert used.exit_code == 0 and f"(file {env_file})" in used.stderr
    env_file.write_text("this is not a setting\n")
    broken = run("--env-file", str(env_file), "event", "list")
    assert broken.exit_code == RET_SETTINGS
    assert f"settings file {env_file}, line 1: not NAME=value" in broken.stderr


def test_a_misspelt_variable_is_named_with_the_real_one(here: Path) -> None:
    result = run("settings", WAITROOM_REDSI_URL="redis://elsewhere:6379/0")
    assert (
        "warning: WAITROOM_REDSI_URL is not a waitroom setting and is ignored; "
        "did you mean WAITROOM_REDIS_URL?"
    ) in result.stderr
    far = run("settings", WAITROOM_SOMETHING_ELSE_ENTIRELY="1")
    assert "WAITROOM_SOMETHING_ELSE_ENTIRELY is not a waitroom setting" in far.stderr
    assert "did you mean" not in far.stderr
    quiet = run("settings", WAITROOM_DEV_REDIS_SERVER="/usr/bin/redis-server")
    assert "warning" not in quiet.stderr


def test_settings_show_values_in_effect_in_lined_up_columns_without_secrets(here: Path) -> None:
    secret = "s3cret-" + "x" * 30
    result = run(
        "settings",
        WAITROOM_JWT_SECRET=secret,
        WAITROOM_REDIS_URL="redis://admin:hunter2@redis.internal:6379/0",
        WAITROOM_API_GRACE_SECONDS="20",
    )
    assert result.exit_code == 0, result.output
    assert secret not in result.output and "hunter2" not in result.output
    lines = result.stdout.splitlines()
    header = lines[0]
    assert header.split() == ["VARIABLE", "VALUE", "FROM", "MEANING"]
    by_name = {line.split()[0]: line for line in lines[1:]}
    grace = by_name["WAITROOM_API_GRACE_SECONDS"]
    assert grace.split()[1:3] == ["20", "environment"]
    assert "redis://admin:***@redis.internal:6379/0" in by_name["WAITROOM_REDIS_URL"]
    # Every value and source starts in its header's column.
    for column in ("VALUE", "FROM"):
        at = header.index(column)
        short = [line for line in lines[1:] if len(line.split()[1]) <= 40]
        assert all(line[at - 1] == " " and line[at] != " " for line in short), column


def test_a_bad_value_in_settings_is_listed_and_named(here: Path) -> None:
    result = run("settings", WAITROOM_LOG_LEVEL="LOUD")
    assert result.exit_code == RET_SETTINGS
    assert "WAITROOM_LOG_LEVEL" in result.stdout  # the table is still printed
    assert "error: WAITROOM_LOG_LEVEL='LOUD' is not a level" in result.stderr


def test_the_docs_table_source_is_unchanged_by_the_environment() -> None:
    """`waitroom settings --json` keeps the keys the generated docs table is built from."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAITROOM_")}
    out = subprocess.run(
        [sys.executable, "-c", "from waitroom_cli.main import cli; cli()", "settings", "--json"],
        capture_output=True, text=True, timeout=60, check=True, env=env,
    )  # fmt: skip
    rows = json.loads(out.stdout)
    assert all({"variable", "default", "help", "value", "source"} <= set(r) for r in rows)
