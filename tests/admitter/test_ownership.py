"""Replicas share the events between them, and survive their dependencies' outages."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from admitter_support import Admitters, create_event, join_users, wait_for
from redis.asyncio import Redis

from shared import keys
from shared.scripts import Scripts
from shared.settings import AdmitterSettings, CommonSettings, KafkaClientSettings
from waitroom_admitter.worker import Admitter
from waitroom_dev.services import redis_service


def test_replicas_share_the_events_and_take_over_those_of_one_that_stops(
    redis_url: str, process_env: dict[str, str]
) -> None:
    events = [f"shared-{i}" for i in range(4)]
    secret = process_env["WAITROOM_JWT_SECRET"]
    common = CommonSettings(redis_url=redis_url, kafka_bootstrap_servers="", jwt_secret=secret)
    config = AdmitterSettings(sweep_seconds=0.1, lock_ttl_ms=1000, grace_seconds=5)

    async def body() -> None:
        async with Redis.from_url(redis_url) as redis:
            scripts = Scripts(redis)
            for event_id in events:
                await create_event(redis, event_id, max_concurrent=10, rate=1000)
            first = Admitter(common, KafkaClientSettings(), config, replica_id="first")
            second = Admitter(common, KafkaClientSettings(), config, replica_id="second")
            first_run = asyncio.create_task(first.run())

            async def first_owns_all() -> bool:
                return len(first.owned) == 4

            await wait_for(first_owns_all, 10, "the only replica to take every event")
            second_run = asyncio.create_task(second.run())

            async def shared_evenly() -> bool:
                return len(first.owned) == 2 and len(second.owned) == 2

            await wait_for(shared_evenly, 10, "the two replicas to own two events each")
            owners = [(await redis.get(keys.lock(e)) or b"").split(b":")[0] for e in events]
            assert sorted(owners) == [b"first", b"first", b"second", b"second"]
            # Every event is worked: one user joining each is admitted.
            sessions = [(await join_users(scripts, e, 1, first=i))[0] for i, e in enumerate(events)]

            async def all_admitted() -> bool:
                counts = [await redis.zcard(keys.checkout(e)) for e in events]
                return counts == [1, 1, 1, 1]

            await wait_for(all_admitted, 10, "a user admitted in every event")
            assert len(sessions) == 4

            first.stop()
            await asyncio.wait_for(first_run, 10)

            async def second_owns_all() -> bool:
                return len(second.owned) == 4

            await wait_for(second_owns_all, 10, "the remaining replica to take every event")
            second.stop()
            await asyncio.wait_for(second_run, 10)
            assert [await redis.exists(keys.lock(e)) for e in events] == [0, 0, 0, 0]

    asyncio.run(body())


def test_a_redis_outage_is_survived_and_logged_once(
    admitters: Admitters, event_id: str, tmp_path: Path
) -> None:
    server = redis_service(tmp_path).start()
    url = f"redis://127.0.0.1:{server.port}/0"
    admitter = admitters.start(
        "outage", WAITROOM_REDIS_URL=url, WAITROOM_KAFKA_BOOTSTRAP_SERVERS=""
    )

    async def admitted_one() -> None:
        async with Redis.from_url(url) as redis:
            await create_event(redis, event_id, max_concurrent=10, rate=1000)
            await join_users(Scripts(redis), event_id, 1)

            async def in_checkout() -> bool:
                return await redis.zcard(keys.checkout(event_id)) == 1

            await wait_for(in_checkout, 20, "the user to be admitted")

    try:
        asyncio.run(admitted_one())
        server.stop()
        asyncio.run(asyncio.sleep(3))  # every loop fails meanwhile, with backoff
        assert admitter.proc.poll() is None, admitter.log()
        server.start()  # empty again: the admitter must find the new event by itself
        asyncio.run(admitted_one())
        assert admitter.terminate(10) == 0
    finally:
        server.stop()
    log = admitter.log()
    # Once for the connection pool, once for the wake-up subscription: never once per attempt.
    # (The subscription's backoff may still be running when the admitter stops.)
    assert len(re.findall("Redis unavailable", log)) == 1, log
    assert len(re.findall("Redis available again", log)) == 1, log
    assert len(re.findall(r"Redis pub/sub \(wake-ups\) unavailable", log)) <= 1, log
    assert "Traceback" not in log
