"""Several admitter processes on one event, with a checkout service driven by Kafka."""

from __future__ import annotations

import asyncio
import time

from admitter_support import (
    Admitters,
    CheckoutService,
    TopicReader,
    create_event,
    heartbeats,
    join_users,
    lock_owner,
    sample_checkout,
    topic_reader,
    wait_for,
)
from redis.asyncio import Redis

from shared.scripts import Scripts
from shared.sessions import Status


def check_announcements(reader: TopicReader, sessions: list[str]) -> None:
    """Every admitted user is in queue.ready once after dedup, admitted once, in join order."""
    ready = reader.distinct("queue.ready")
    assert [m.body["session_id"] for m in ready.values()] == sessions
    admissions: dict[str, set[str]] = {}
    for message in reader.messages:
        if message.topic == "queue.ready":
            assert message.header_id == message.message_id
            admissions.setdefault(message.body["session_id"], set()).add(
                message.body["admitted_at"]
            )
    assert all(len(times) == 1 for times in admissions.values()), "a user was admitted twice"
    # Each partition key (the event) lives in one partition, which keeps the order.
    assert len({m.partition for m in ready.values()}) == 1


async def final_statuses(scripts: Scripts, event_id: str, sessions: list[str]) -> set[Status]:
    views = (await scripts.status(event_id, sessions)).sessions
    return {v.record.status if v.record else Status.UNSPECIFIED for v in views}


def test_three_admitters_keep_the_cap_and_fifo_and_announce_everyone_once(
    admitters: Admitters, redis_url: str, bootstrap: str, event_id: str
) -> None:
    users, cap = 2000, 50
    secret = admitters.env["WAITROOM_JWT_SECRET"]

    async def body() -> None:
        async with Redis.from_url(redis_url) as redis:
            scripts = Scripts(redis)
            await create_event(redis, event_id, max_concurrent=cap, rate=20_000)
            procs = [admitters.start(f"r{i}") for i in range(3)]

            async def all_beating() -> bool:
                return len(await heartbeats(redis)) == 3

            await wait_for(all_beating, 30, "three admitter heartbeats")
            with topic_reader(bootstrap, ["queue.ready"], event_id) as reader:
                checkout = CheckoutService(scripts, event_id, secret, delay=(0.002, 0.02))
                checkout.attach(reader)
                stop = asyncio.Event()
                sampler = asyncio.create_task(sample_checkout(redis, event_id, stop))
                service = asyncio.create_task(checkout.run(users, timeout=90))
                sessions = await join_users(scripts, event_id, users)
                await service
                stop.set()
                samples = await sampler
            assert max(samples) == cap, "the cap was passed, or never reached"
            assert len(samples) > 500
            assert checkout.bad_tokens == []
            assert sorted(checkout.finished) == sorted(sessions)
            check_announcements(reader, sessions)
            assert await final_statuses(scripts, event_id, sessions) == {Status.COMPLETED}
            assert [p.terminate(10) for p in procs] == [0, 0, 0]

    asyncio.run(body())


def test_killing_the_owner_loses_nobody_and_another_replica_takes_over(
    admitters: Admitters, redis_url: str, bootstrap: str, event_id: str
) -> None:
    users, cap, lock_ttl_ms = 1000, 50, 1000
    secret = admitters.env["WAITROOM_JWT_SECRET"]

    async def body() -> None:
        async with Redis.from_url(redis_url) as redis:
            scripts = Scripts(redis)
            await create_event(redis, event_id, max_concurrent=cap, rate=20_000)
            procs = {
                name: admitters.start(name, WAITROOM_ADMITTER_LOCK_TTL_MS=str(lock_ttl_ms))
                for name in ("a", "b")
            }

            async def both_beating() -> bool:
                return len(await heartbeats(redis)) == 2

            await wait_for(both_beating, 30, "two admitter heartbeats")
            with topic_reader(bootstrap, ["queue.ready"], event_id) as reader:
                checkout = CheckoutService(scripts, event_id, secret, delay=(0.005, 0.03))
                checkout.attach(reader)
                service = asyncio.create_task(checkout.run(users, timeout=90))
                sessions = await join_users(scripts, event_id, users)

                async def mid_run() -> bool:
                    return len(checkout.finished) >= users // 3

                await wait_for(mid_run, 60, "a third of the users to get through", interval=0.01)
                victim = await lock_owner(redis, event_id)
                assert victim in procs
                procs[victim].proc.kill()
                killed_at = time.monotonic()

                async def taken_over() -> str | None:
                    owner = await lock_owner(redis, event_id)
                    return owner if owner not in (None, victim) else None

                successor = await wait_for(
                    taken_over, 10, "another replica to take the event", 0.01
                )
                takeover = time.monotonic() - killed_at
                await service
            assert successor != victim
            # The lock outlives its owner by at most its lifetime; then the next sweep takes it.
            assert takeover < lock_ttl_ms / 1000 + 3, f"took over after {takeover:.2f} s"
            assert checkout.bad_tokens == []
            assert sorted(checkout.finished) == sorted(sessions)
            check_announcements(reader, sessions)
            assert await final_statuses(scripts, event_id, sessions) == {Status.COMPLETED}
            assert procs[successor].terminate(10) == 0

    asyncio.run(body())
