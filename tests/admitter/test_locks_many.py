"""Taking and renewing many locks at once keeps the token check of one."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from shared import keys
from shared.scripts import RENEW_CHUNK, Scripts
from waitroom_admitter.locks import Locks

TTL_MS = 5000


def test_acquire_many_takes_only_the_free_locks(redis_url: str) -> None:
    async def body() -> None:
        async with Redis.from_url(redis_url) as redis:
            events = [f"ev-{n}" for n in range(5)]
            await redis.set(keys.lock("ev-1"), "other:token", px=TTL_MS)
            await redis.set(keys.lock("ev-3"), "other:token", px=TTL_MS)
            locks = Locks(Scripts(redis), TTL_MS, "me")
            taken = await locks.acquire_many(events)
            assert [lock.event_id for lock in taken] == ["ev-0", "ev-2", "ev-4"]
            for lock in taken:
                assert (await redis.get(lock.key)).decode() == lock.token
                assert lock.token.startswith("me:")
            assert await redis.get(keys.lock("ev-1")) == b"other:token"
            assert len({lock.token for lock in taken}) == 3  # each holding its own token
            assert locks.acquired == 3

    asyncio.run(body())


def test_renew_all_renews_ours_and_reports_each_lost_one_across_calls(redis_url: str) -> None:
    async def body() -> None:
        async with Redis.from_url(redis_url) as redis:
            count = 2 * RENEW_CHUNK + 500  # three script calls
            events = [f"ev-{n}" for n in range(count)]
            locks = Locks(Scripts(redis), TTL_MS, "me")
            held = await locks.acquire_many(events)
            assert len(held) == count
            # One lock in each call taken over by another replica, one gone: never renewed.
            stolen = {7, RENEW_CHUNK + 3, 2 * RENEW_CHUNK + 499}
            gone = {RENEW_CHUNK}
            for n in stolen:
                await redis.set(held[n].key, "other:token", px=100)
            for n in gone:
                await redis.delete(held[n].key)
            await redis.pexpire(held[0].key, 100)  # ours, about to run out: renewed
            before = [lock.valid_until for lock in held]
            await asyncio.sleep(0.01)
            renewed = await locks.renew_all(held)
            assert [n for n, ok in enumerate(renewed) if not ok] == sorted(stolen | gone)
            assert await redis.pttl(held[0].key) > 1000
            for n in stolen:
                assert await redis.get(held[n].key) == b"other:token"  # left alone
                assert await redis.pttl(held[n].key) <= 100
            assert not await redis.exists(held[RENEW_CHUNK].key)
            assert all(lock.valid_until > before[n] for n, lock in enumerate(held) if renewed[n])
            assert locks.renewed == count - 4 and locks.lost == 4

    asyncio.run(body())


def test_renew_all_of_nothing_sends_nothing(redis_url: str) -> None:
    async def body() -> None:
        async with Redis.from_url(redis_url) as redis:
            assert await Locks(Scripts(redis), TTL_MS, "me").renew_all([]) == []

    asyncio.run(body())
