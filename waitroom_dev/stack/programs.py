"""The waitroom's own programs as the dev stack runs them under supervisord."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from shared.settings import CommonSettings
from waitroom_dev.stack import supervise
from waitroom_dev.stack.options import (
    DEV_GRACE_SECONDS,
    DEV_KAFKA_CLIENT,
    Ports,
    StackError,
    StackOptions,
    program_names,
)


def waitroom_command() -> str:
    """The ``waitroom`` script of this interpreter (not a version manager's shim)."""
    beside = shutil.which("waitroom", path=str(Path(sys.executable).parent))
    found = beside or shutil.which("waitroom")
    if not found:
        raise StackError("the `waitroom` command is not installed: pip install -e '.[dev]'")
    return found


def supervised_programs(
    options: StackOptions, common: CommonSettings, ports: Ports
) -> list[supervise.Program]:
    """The API, the admitters and the consumer, each with its environment and stop order."""
    base = {
        "WAITROOM_REDIS_URL": common.redis_url,
        "WAITROOM_KAFKA_BOOTSTRAP_SERVERS": common.kafka_bootstrap_servers,
        "WAITROOM_JWT_SECRET": common.jwt_secret,
        "WAITROOM_API_ADDR": f"127.0.0.1:{ports.api}",
        # One API process: a stale API from another run must not share its port silently.
        "WAITROOM_API_REUSE_PORT": "false",
        "WAITROOM_LOG_LEVEL": env_or("WAITROOM_LOG_LEVEL", "INFO"),
    }
    base |= {name: env_or(name, value) for name, value in DEV_KAFKA_CLIENT.items()}
    for process in ("API", "ADMITTER", "CONSUMER"):
        name = f"WAITROOM_{process}_GRACE_SECONDS"
        base[name] = env_or(name, DEV_GRACE_SECONDS)
    exe = waitroom_command()
    stop_wait = DEV_GRACE_SECONDS + 5
    programs = []
    # supervisord starts low priorities first and stops high ones first: the API stops
    # taking joins before the admitters and the consumer go.
    for name in program_names(options.admitters):
        kind = name.partition("-")[0]
        priority = {"consumer": 10, "admitter": 20, "api": 30}[kind]
        env = {**base, "WAITROOM_METRICS_PORT": str(ports.metrics[name])}
        if kind == "consumer":
            del env["WAITROOM_JWT_SECRET"]  # it never signs or checks a token
        programs.append(supervise.Program(name, [exe, kind], env, priority, stop_wait))
    return programs


def env_or(name: str, default: object) -> str:
    """The environment's value of ``name`` when set and not empty, else ``default``."""
    return os.environ.get(name) or str(default)
