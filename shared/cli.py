"""What every `waitroom` command shares: exit codes, output, settings, where Redis and Kafka
are, and a Redis connection."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from shared import heartbeats
from shared import settings as settings_mod
from shared.connections import redis_client
from shared.errors import Refused, WaitroomError
from shared.redis_config import redis_options
from shared.scripts import Scripts

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

# Named exit codes (dramatiq's RET_* style).
RET_OK = 0
RET_ERROR = 1  # the request was refused (unknown event, invalid value, ...)
RET_CONNECT = 2  # Redis or Kafka could not be reached, or is not Redis or Kafka
RET_SETTINGS = 3  # a WAITROOM_ variable holds a bad value
RET_INVALID = 4  # `check`-style commands: the thing checked is not healthy/valid
RET_FORCED = 5  # a process stopped without draining (a second signal, or the grace ran out)

REDIS_VAR = "WAITROOM_REDIS_URL"
KAFKA_VAR = "WAITROOM_KAFKA_BOOTSTRAP_SERVERS"

#: The state file `waitroom dev up` writes (waitroom_dev's ``StackState``), relative to the
#: directory it was started in; `waitroom simulate` finds the stack the same way.
DEV_STATE_FILE = Path(".waitroom-dev") / "stack.json"


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)


def emit(as_json: bool, data: Any, human: str) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True) if as_json else human)


def fail(message: str, code: int = RET_ERROR) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


# --- where Redis and Kafka are ---------------------------------------------------------------


def _dev_stack_alive(pid: Any) -> bool:
    """The `waitroom dev up` process that wrote the state file still runs (not a recycled
    pid)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        line = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (macOS): the pid is alive, trust it
    # A zombie is gone; an empty command line is a process between fork and exec: trust it,
    # as waitroom_dev's own `is_ours` does.
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        return False
    return b"waitroom" in line if line else True


def dev_stack_layer(state_file: Path = DEV_STATE_FILE) -> settings_mod.Layer | None:
    """The running dev stack's Redis and Kafka, when a live one wrote ``state_file``."""
    try:
        state = json.loads(state_file.read_text("utf-8"))
        redis_url, bootstrap = str(state["redis_url"]), str(state["bootstrap"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _dev_stack_alive(state.get("pid")):
        return None
    where = f"the dev stack in {state_file.parent}"
    return settings_mod.Layer(where, {REDIS_VAR: redis_url, KAFKA_VAR: bootstrap})


def env_file_layer(path: Path | None) -> settings_mod.Layer | None:
    """The settings file: ``path``, else ``WAITROOM_ENV_FILE``, else the systemd unit's file
    when it exists and is readable."""
    if path is None and os.environ.get("WAITROOM_ENV_FILE"):
        path = Path(os.environ["WAITROOM_ENV_FILE"])
    if path is None:
        system = settings_mod.SYSTEM_ENV_FILE
        if not (system.is_file() and os.access(system, os.R_OK)):
            return None
        path = system
    return settings_mod.Layer(f"file {path}", settings_mod.read_env_file(path))


_announced: set[str] = set()


def install_targets(
    ctx: click.Context, redis_url: str | None, kafka: str | None, env_file: Path | None
) -> None:
    """Settle, for this command, where every setting comes from (flag, environment, settings
    file, dev stack, default) and warn about ``WAITROOM_`` names no setting knows.

    Raises:
        SettingsError: the settings file is unreadable or malformed.
    """
    _announced.clear()
    flags = {REDIS_VAR: redis_url, KAFKA_VAR: kafka}
    above = [
        settings_mod.Layer(f"flag --{'redis-url' if name == REDIS_VAR else 'kafka'}", {name: v})
        for name, v in flags.items()
        if v is not None
    ]
    below = [layer for layer in (env_file_layer(env_file), dev_stack_layer()) if layer]
    ctx.with_resource(settings_mod.layered(above, below))
    names = [*os.environ, *(n for layer in below for n in layer.values)]
    for message in settings_mod.unknown_variables(names):
        warn(message)


def announce(variable: str) -> None:
    """Say on stderr, once, which Redis or Kafka a command uses when nobody chose it
    explicitly (with a flag or a variable): a default or a discovered dev stack may be
    another stack's server."""
    found = settings_mod.lookup(variable)
    source = found[1] if found else settings_mod.DEFAULT
    if variable in _announced or source == settings_mod.ENVIRONMENT or source.startswith("flag"):
        return
    _announced.add(variable)
    what, flag = ("Redis", "--redis-url") if variable == REDIS_VAR else ("Kafka", "--kafka")
    value = settings_mod.redact_url(settings_mod.lookup_or_default(variable))
    origin = "the default" if source == settings_mod.DEFAULT else source
    click.echo(
        f"note: using {what} at {value} ({origin}); set {variable} or `waitroom {flag}` to choose",
        err=True,
    )


def target_options(func: F) -> F:
    """The ``waitroom`` group's options that say where Redis and Kafka are."""
    func = click.option(
        "--env-file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Settings file of NAME=value lines (default: $WAITROOM_ENV_FILE, else "
        "/etc/waitroom/waitroom.env when readable); the environment wins over it.",
    )(func)
    func = click.option(
        "--kafka",
        metavar="HOST:PORT[,...]",
        default=None,
        help=f"Kafka bootstrap servers for this command (overrides {KAFKA_VAR}).",
    )(func)
    return click.option(
        "--redis-url",
        metavar="URL",
        default=None,
        help=f"Redis for this command (overrides {REDIS_VAR}).",
    )(func)


# --- settings and Redis ----------------------------------------------------------------------


def common_settings() -> settings_mod.CommonSettings:
    try:
        return settings_mod.load(settings_mod.CommonSettings)
    except settings_mod.SettingsError as exc:
        fail(str(exc), RET_SETTINGS)


def redis_problem(exc: BaseException, config: settings_mod.CommonSettings) -> str | None:
    """A sentence for a failure to talk to the Redis ``config`` names, or None when ``exc`` is
    not one (then it is a bug, and its traceback matters)."""
    from redis.exceptions import AuthenticationError, InvalidResponse, ResponseError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    source = settings_mod.origin(REDIS_VAR)
    origin = "the default" if source == settings_mod.DEFAULT else f"from {source}"
    where = f"{redis_options(config).where} ({origin})"
    if isinstance(exc, InvalidResponse):
        return f"{where} is not a Redis server: it answered {exc}"
    if isinstance(exc, AuthenticationError) or (
        isinstance(exc, ResponseError) and str(exc).startswith(("NOAUTH", "WRONGPASS"))
    ):
        return f"{where} refused the credentials: {exc}"
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
        return f"cannot reach {where}: {exc}"
    return None


def with_redis(action: Callable[[Scripts], Awaitable[T]]) -> T:
    """Run ``action`` with a Redis client built from the settings, mapping errors to exits."""
    config = common_settings()
    announce(REDIS_VAR)

    async def go() -> T:
        client = redis_client(config)
        try:
            return await action(Scripts(client))
        finally:
            await client.aclose()

    try:
        return asyncio.run(go())
    except WaitroomError as exc:
        fail(exc.message)
    except Refused as exc:
        fail(str(exc))
    except settings_mod.SettingsError as exc:
        fail(str(exc), RET_SETTINGS)
    except Exception as exc:
        problem = redis_problem(exc, config)
        if problem is None:
            raise
        fail(problem, RET_CONNECT)


def check_heartbeats(
    key: str,
    role: str,
    replica: str | None,
    max_age: float | None,
    as_json: bool,
    describe: Callable[[heartbeats.Beat], str],
) -> NoReturn:
    """A worker's ``check`` command (a liveness probe): exit 0 when a replica of ``role`` (or
    the one named ``replica``) has a fresh heartbeat, else ``RET_INVALID``.

    A heartbeat is fresh while it is at most ``max_age`` seconds old; by default three of the
    intervals its replica reported about itself (at least 5 s). Both workers answer in the same
    JSON: ``{"healthy": bool, "replicas": [{"replica", "age_seconds", "max_age_seconds",
    "fresh", ...the replica's own counters}]}``.
    """

    async def read(scripts: Scripts) -> list[heartbeats.Beat]:
        return await heartbeats.read(scripts.redis, key)

    beats = with_redis(read)
    now_ms = heartbeats.wall_ms()
    rows, lines = [], []
    for beat in beats:
        limit = beat.max_age if max_age is None else max_age
        age = beat.age_seconds(now_ms)
        fresh = age <= limit
        rows.append(
            {
                **beat.data,
                "replica": beat.replica,
                "age_seconds": round(age, 3),
                "max_age_seconds": limit,
                "fresh": fresh,
            }
        )
        state = "fresh" if fresh else "STALE"
        lines.append(f"{beat.replica:<40} {state:<5}  {age:5.1f} s ago  {describe(beat)}")
    considered = [r for r in rows if replica is None or r["replica"] == replica]
    healthy = any(r["fresh"] for r in considered)
    if not rows:
        lines.append(f"no {role} heartbeats: is any {role} running against this Redis?")
    elif not considered:
        lines.append(f"{role} replica {replica!r} has no heartbeat")
    emit(as_json, {"healthy": healthy, "replicas": rows}, "\n".join(lines))
    sys.exit(RET_OK if healthy else RET_INVALID)


def run_process(main: Coroutine[Any, Any, T]) -> T:
    """Run a process's main coroutine on uvloop where it is installed.

    uvloop's event loop takes a third less CPU per gRPC call and per Redis round trip than the
    stock loop (measured in bench/join.py); grpc.aio, redis-py and signal handlers run unchanged
    on it.
    """
    try:
        import uvloop
    except ImportError:  # not on every platform (no Windows build)
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
