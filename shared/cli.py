"""What every `waitroom` command shares: exit codes, output, settings and a Redis connection."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
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
RET_CONNECT = 2  # Redis or Kafka could not be reached
RET_SETTINGS = 3  # a WAITROOM_ variable holds a bad value
RET_INVALID = 4  # `check`-style commands: the thing checked is not healthy/valid
RET_FORCED = 5  # a process stopped without draining (a second signal, or the grace ran out)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)


def emit(as_json: bool, data: Any, human: str) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True) if as_json else human)


def fail(message: str, code: int = RET_ERROR) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def common_settings() -> settings_mod.CommonSettings:
    try:
        return settings_mod.load(settings_mod.CommonSettings)
    except settings_mod.SettingsError as exc:
        fail(str(exc), RET_SETTINGS)


def with_redis(action: Callable[[Scripts], Awaitable[T]]) -> T:
    """Run ``action`` with a Redis client built from the settings, mapping errors to exits."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    config = common_settings()

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
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        fail(f"cannot reach {redis_options(config).where}: {exc}", RET_CONNECT)
    except settings_mod.SettingsError as exc:
        fail(str(exc), RET_SETTINGS)


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
