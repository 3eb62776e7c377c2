"""Idle events cost a sweep nothing: their upkeep comes every ``IDLE_UPKEEP_SECONDS``, and at
the next sweep once anything is announced."""

from __future__ import annotations

import asyncio
from collections import Counter

from admitter_support import create_event, join_users, wait_for
from redis.asyncio import Redis

from shared.events import EventState
from shared.scripts import Scripts
from shared.settings import AdmitterSettings, CommonSettings, KafkaClientSettings
from waitroom_admitter.schedule import IDLE_UPKEEP_SECONDS
from waitroom_admitter.worker import Admitter


def test_idle_events_are_kept_up_slowly_and_woken_by_an_announcement(
    redis_url: str, event_id: str
) -> None:
    idle, busy = f"{event_id}-idle", f"{event_id}-busy"
    assert IDLE_UPKEEP_SECONDS >= 10  # the test's sweeps all fall inside one idle round

    async def body() -> None:
        redis = Redis.from_url(redis_url)
        scripts = Scripts(redis)
        await create_event(redis, idle, rate=1000)
        await create_event(redis, busy, rate=1000, state=EventState.PAUSED)
        await join_users(scripts, busy, 1)  # someone waiting: never idle
        common = CommonSettings(redis_url=redis_url, kafka_bootstrap_servers="")
        settings = AdmitterSettings(sweep_seconds=0.05)
        admitter = Admitter(common, KafkaClientSettings(), settings, replica_id="idle-test")
        upkept: Counter[str] = Counter()
        purge = admitter.scripts.purge

        async def counting_purge(event: str, retention_ms: int, limit: int) -> int:
            upkept[event] += 1
            return await purge(event, retention_ms, limit)

        admitter.scripts.purge = counting_purge  # type: ignore[method-assign]
        run = asyncio.create_task(admitter.run())
        try:

            async def busy_upkept(times: int) -> bool:
                return upkept[busy] >= times

            await wait_for(lambda: busy_upkept(8), 30, "eight sweeps of the busy event")
            assert upkept[idle] == 1  # found idle at its first upkeep, then left alone
            before = upkept[busy]
            await join_users(scripts, idle, 1)  # room free: the join is announced

            async def idle_upkept_again() -> bool:
                return upkept[idle] >= 3

            await wait_for(idle_upkept_again, 30, "the announced event's upkeep every sweep")
            assert upkept[busy] > before
        finally:
            admitter.stop()
            await asyncio.wait_for(run, 15)
            await redis.aclose()

    asyncio.run(body())
