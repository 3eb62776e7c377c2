"""The Dockerfile and the production supervisor configuration, read without Docker or a host.

The supervisor configuration is parsed by supervisor's own ServerOptions, the parser
supervisord itself runs at start-up.
"""

from __future__ import annotations

import configparser
import fnmatch
import json
import shlex
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
from deploy_support import BASE, DEPLOY, ROOT, by_kind, render
from supervisor.options import ServerOptions

from shared import settings as settings_mod
from waitroom_cli.main import cli

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = DEPLOY / "docker" / "Dockerfile.dockerignore"
SUPERVISOR = DEPLOY / "supervisor"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

DRAIN_SETTINGS: dict[str, type[Any]] = {
    "api": settings_mod.ApiSettings,
    "admitter": settings_mod.AdmitterSettings,
    "consumer": settings_mod.ConsumerSettings,
}
SETTING_NAMES = {
    name
    for cls in (
        settings_mod.CommonSettings,
        settings_mod.KafkaClientSettings,
        *DRAIN_SETTINGS.values(),
    )
    for name, _, _ in settings_mod.describe(cls)
}


# --- Dockerfile -----------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped.removesuffix("\\").strip() + " "
        if not stripped.endswith("\\"):
            keyword, _, arguments = pending.strip().partition(" ")
            result.append((keyword.upper(), arguments.strip()))
            pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return result


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def _packages() -> set[str]:
    """Top-level package folders that pyproject's packages.find includes."""
    patterns = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    return {
        path.name
        for path in ROOT.iterdir()
        if (path / "__init__.py").is_file() and any(fnmatch.fnmatch(path.name, p) for p in patterns)
    }


def test_entrypoint_is_the_console_script_pyproject_declares() -> None:
    entrypoints = [json.loads(args) for keyword, args in _final_stage() if keyword == "ENTRYPOINT"]
    assert entrypoints == [["waitroom"]], "exec form, so SIGTERM reaches the process itself"
    assert PYPROJECT["project"]["scripts"]["waitroom"] == "waitroom_cli.main:cli"


def test_image_is_python_311_slim_and_runs_as_a_non_root_uid() -> None:
    stage = _final_stage()
    assert stage[0] == ("FROM", "python:3.11-slim")
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    (user,) = [args for keyword, args in stage if keyword == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, "numeric, so runAsNonRoot can check it"
    assert gid.isdigit() and int(gid) != 0
    # The Kubernetes pods run as the same user.
    for deployment in by_kind(render(BASE), "Deployment").values():
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)


def test_image_installs_the_package_not_an_editable_checkout() -> None:
    runs = " ".join(args for keyword, args in _final_stage() if keyword == "RUN")
    assert "pip install --no-index --find-links /wheels ticketbottle-waitroom" in runs
    assert "-e " not in runs and "--editable" not in runs
    assert PYPROJECT["project"]["name"] == "ticketbottle-waitroom"


def test_build_copies_every_package_and_what_the_build_reads() -> None:
    copied: set[str] = set()
    for keyword, args in _instructions():
        if keyword == "COPY" and not args.startswith("--from"):
            *sources, _destination = shlex.split(args)
            copied.update(sources)
    missing = [source for source in copied if not (ROOT / source).exists()]
    assert missing == [], "COPY of a path the repository does not have"
    assert {"pyproject.toml", PYPROJECT["project"]["readme"]} <= copied
    assert copied - {"pyproject.toml", PYPROJECT["project"]["readme"]} == _packages()
    # The ignore file excludes everything, then lets exactly those paths back in.
    allowed = {
        line.removeprefix("!").rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.startswith("!")
    }
    assert allowed == copied


# --- supervisor -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def supervisor_options(tmp_path_factory: pytest.TempPathFactory) -> ServerOptions:
    """supervisord's own parse of the configuration, its /run/waitroom moved to a temp dir
    (supervisord refuses a pid file in a folder that does not exist; systemd creates it)."""
    run_dir = tmp_path_factory.mktemp("run")
    text = (SUPERVISOR / "supervisord.conf").read_text().replace("/run/waitroom/", f"{run_dir}/")
    path = run_dir / "supervisord.conf"
    path.write_text(text)
    options = ServerOptions()
    options.realize(args=["-c", str(path)])
    assert options.parse_criticals == [] and options.parse_warnings == []
    return options


def _programs(options: ServerOptions) -> dict[str, list[Any]]:
    """Program name -> its process configs."""
    programs: dict[str, list[Any]] = {}
    for group in options.process_group_configs:
        for process in group.process_configs:
            programs.setdefault(process.name.rpartition("-")[0], []).append(process)
    return programs


def test_supervisor_runs_every_process_with_a_real_subcommand(
    supervisor_options: ServerOptions,
) -> None:
    programs = _programs(supervisor_options)
    assert set(programs) == {"api", "admitter", "consumer"}
    assert len(programs["api"]) > 1, "several API processes share the port"
    assert len(programs["admitter"]) >= 2, "a second admitter takes over at once"
    context = click.Context(cli)
    for name, processes in programs.items():
        for process in processes:
            assert shlex.split(process.command) == ["waitroom", name]
            assert cli.get_command(context, name) is not None
    assert supervisor_options.nodaemon is True


def test_supervisor_stops_each_process_after_its_drain(supervisor_options: ServerOptions) -> None:
    for name, processes in _programs(supervisor_options).items():
        grace = settings_mod.load(DRAIN_SETTINGS[name], {}).grace_seconds
        for process in processes:
            assert process.stopsignal.name == "SIGTERM", process.name
            assert process.stopwaitsecs >= grace + 3, f"{process.name}: SIGKILL cuts the drain"
            assert process.stopasgroup and process.killasgroup, process.name
            assert process.autorestart, process.name


def test_supervisor_gives_each_process_its_own_metrics_port_and_replica_id(
    supervisor_options: ServerOptions,
) -> None:
    processes = [p for group in _programs(supervisor_options).values() for p in group]
    ports = [int(p.environment["WAITROOM_METRICS_PORT"]) for p in processes]
    assert len(set(ports)) == len(ports) and min(ports) > 1024
    for process in processes:
        assert set(process.environment) <= SETTING_NAMES, process.name
    for name in ("admitter", "consumer"):
        ids = [
            p.environment[f"WAITROOM_{name.upper()}_REPLICA_ID"]
            for p in _programs(supervisor_options)[name]
        ]
        assert len(set(ids)) == len(ids)
    # The API processes share the one listen address through SO_REUSEPORT.
    for process in _programs(supervisor_options)["api"]:
        assert "WAITROOM_API_ADDR" not in process.environment
        assert "WAITROOM_API_REUSE_PORT" not in process.environment
    assert settings_mod.load(settings_mod.ApiSettings, {}).reuse_port is True


def test_supervisor_logs_to_stdout(supervisor_options: ServerOptions) -> None:
    for processes in _programs(supervisor_options).values():
        for process in processes:
            assert process.stdout_logfile == "/dev/stdout" and process.redirect_stderr


def test_systemd_unit_runs_this_configuration_and_waits_for_it(
    supervisor_options: ServerOptions,
) -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((SUPERVISOR / "waitroom.service").read_text())
    service = unit["Service"]
    assert service["ExecStart"].split()[1:] == ["-n", "-c", "/etc/waitroom/supervisord.conf"]
    assert service["RuntimeDirectory"] == "waitroom", "holds the pid file and socket"
    assert Path(supervisor_options.pidfile).name == "supervisord.pid"
    longest = max(p.stopwaitsecs for group in _programs(supervisor_options).values() for p in group)
    assert int(service["TimeoutStopSec"]) > longest
    # Open position streams hold a descriptor each; the processes inherit this limit.
    assert int(service["LimitNOFILE"]) >= 65536
    example = dict(
        line.split("=", 1)
        for line in (SUPERVISOR / "waitroom.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert set(example) <= SETTING_NAMES
