"""The admitter process: SIGTERM drains and releases, the check command, bad settings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator

from admitter_support import WAITROOM, Admitters, create_event, join_users, lock_owner, wait_for
from redis.asyncio import Redis

from shared import keys
from shared.cli import RET_FORCED, RET_INVALID, RET_SETTINGS
from shared.scripts import Scripts
from waitroom_dev.services import free_port


def check(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [WAITROOM, "admitter", "check", "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_sigterm_mid_run_exits_zero_within_grace_and_releases_the_lock(
    admitters: Admitters, redis_url: str, event_id: str
) -> None:
    grace = 5.0
    metrics_port = free_port()
    admitter = admitters.start(
        "term",
        WAITROOM_ADMITTER_GRACE_SECONDS=str(grace),
        WAITROOM_METRICS_PORT=str(metrics_port),
    )

    async def body() -> None:
        async with Redis.from_url(redis_url) as redis:
            scripts = Scripts(redis)
            # A slow rate keeps it busy admitting when the signal comes.
            await create_event(redis, event_id, max_concurrent=1000, rate=20)
            await join_users(scripts, event_id, 200)

            async def owned() -> bool:
                return await lock_owner(redis, event_id) == "term"

            await wait_for(owned, 30, "the admitter to take the event")

            async def admitting() -> bool:
                return await redis.zcard(keys.checkout(event_id)) >= 20

            await wait_for(admitting, 30, "admissions to start")
            healthy = check(admitters.env, "--replica", "term")
            assert healthy.returncode == 0, healthy.stdout + healthy.stderr
            report = json.loads(healthy.stdout)
            assert report["healthy"] is True
            assert [r["replica"] for r in report["replicas"]] == ["term"]
            assert check(admitters.env, "--replica", "someone-else").returncode == RET_INVALID
            scraped = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
            exported = scraped.read().decode()
            assert f'waitroom_lock_owned{{event="{event_id}"}} 1.0' in exported
            assert f'waitroom_checkout_capacity{{event="{event_id}"}} 1000.0' in exported
            assert f'waitroom_event_paused{{event="{event_id}"}} 0.0' in exported
            assert f'waitroom_admissions_total{{event="{event_id}"}}' in exported

            started = time.monotonic()
            assert admitter.terminate(grace + 5) == 0, admitter.log()
            assert time.monotonic() - started < grace
            assert await redis.exists(keys.lock(event_id)) == 0
            # Everything admitted before the stop was relayed on the way out.
            assert await redis.xlen(keys.outbox(event_id)) == 0
            # A clean stop takes its heartbeat along: nothing claims to be alive.
            assert check(admitters.env).returncode == RET_INVALID

    asyncio.run(body())
    assert "Traceback" not in admitter.log()


def test_bad_settings_stop_at_start_naming_the_variable(admitters: Admitters) -> None:
    cases = {
        "WAITROOM_ADMITTER_LOCK_TTL_MS": "soon",
        "WAITROOM_ADMITTER_SWEEP_SECONDS": "0",
        "WAITROOM_JWT_SECRET": "short",
    }
    for variable, value in cases.items():
        env = dict(admitters.env, **{variable: value})
        result = subprocess.run(
            [WAITROOM, "admitter"], env=env, capture_output=True, text=True, timeout=30
        )
        assert result.returncode == RET_SETTINGS, (variable, result.stderr)
        assert variable in result.stderr


@contextlib.contextmanager
def hung_kafka() -> Iterator[str]:
    """An address that accepts connections and never answers, like a wedged broker."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield f"127.0.0.1:{server.getsockname()[1]}"


def test_sigterm_with_kafka_hung_still_exits_zero_within_grace(
    admitters: Admitters, redis_url: str, event_id: str
) -> None:
    grace = 3.0
    with hung_kafka() as bootstrap:
        admitter = admitters.start(
            "hung",
            WAITROOM_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            WAITROOM_ADMITTER_GRACE_SECONDS=str(grace),
        )

        async def body() -> None:
            async with Redis.from_url(redis_url) as redis:
                await create_event(redis, event_id)

                async def owned() -> bool:
                    return await lock_owner(redis, event_id) == "hung"

                await wait_for(owned, 30, "the admitter to take the event")
                started = time.monotonic()
                assert admitter.terminate(grace + 10) == 0, admitter.log()
                assert time.monotonic() - started < grace + 1
                assert await redis.exists(keys.lock(event_id)) == 0

        asyncio.run(body())


def test_a_second_signal_exits_at_once(admitters: Admitters, redis_url: str, event_id: str) -> None:
    with hung_kafka() as bootstrap:
        admitter = admitters.start(
            "impatient",
            WAITROOM_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            WAITROOM_ADMITTER_GRACE_SECONDS="60",
        )

        async def body() -> None:
            async with Redis.from_url(redis_url) as redis:
                await create_event(redis, event_id)

                async def owned() -> bool:
                    return await lock_owner(redis, event_id) == "impatient"

                await wait_for(owned, 30, "the admitter to take the event")

        asyncio.run(body())
        admitter.proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert admitter.proc.poll() is None  # draining: the relay is stuck on Kafka
        started = time.monotonic()
        assert admitter.terminate(10) == RET_FORCED
        assert time.monotonic() - started < 5
