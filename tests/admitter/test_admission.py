"""Admission in one process against the real Redis: leases, rate, and the cap without locks."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest
from admitter_support import create_event, join_users, running_admitter, wait_for
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from shared import keys, outbox
from shared.backoff import Outage
from shared.ids import ticket_of_session
from shared.scripts import FinishOutcome, Scripts
from shared.sessions import Status
from waitroom_admitter.admission import EventWorker
from waitroom_admitter.clock import RedisClock


async def statuses(scripts: Scripts, event_id: str, sessions: list[str]) -> list[Status]:
    result = await scripts.status(event_id, sessions)
    return [v.record.status if v.record else Status.UNSPECIFIED for v in result.sessions]


def test_a_lease_that_runs_out_is_reclaimed_and_the_next_user_admitted(
    redis_url: str, event_id: str, process_env: dict[str, str]
) -> None:
    secret = process_env["WAITROOM_JWT_SECRET"]

    async def body() -> None:
        async with Redis.from_url(redis_url) as redis:
            scripts = Scripts(redis)
            await create_event(redis, event_id, max_concurrent=1, checkout_ttl_seconds=1, rate=100)
            first, second = await join_users(scripts, event_id, 2)
            # An hour-long sweep: only the lease deadline the admit script reports can wake the
            # loop, so a second user admitted at all was admitted because the lease ran out.
            async with running_admitter(redis_url, secret, sweep_seconds=3600.0):

                async def second_admitted() -> bool:
                    return (await statuses(scripts, event_id, [second]))[0] is Status.READY

                await wait_for(second_admitted, 60, "the second user to be admitted")
            views = (await scripts.status(event_id, [first, second])).sessions
            lapsed, admitted = views[0].record, views[1].record
            assert lapsed is not None and admitted is not None
            assert (lapsed.status, lapsed.reason) == (Status.EXPIRED, "checkout_expired")
            assert admitted.admitted_ms >= lapsed.checkout_deadline_ms
            assert await redis.zcard(keys.checkout(event_id)) == 1
            left = [e for e in await outbox.read(redis, event_id, 100) if e.topic == "queue.left"]
            assert [(e.fields["session_id"], e.fields["reason"]) for e in left] == [
                (first, "checkout_expired")
            ]

    asyncio.run(body())


def test_admission_keeps_the_rate_even_with_room_for_everyone(
    redis_url: str, event_id: str, process_env: dict[str, str]
) -> None:
    secret = process_env["WAITROOM_JWT_SECRET"]
    users, rate = 1000, 100

    async def body() -> None:
        async with Redis.from_url(redis_url) as redis:
            scripts = Scripts(redis)
            await create_event(redis, event_id, max_concurrent=users, rate=rate)
            sessions = await join_users(scripts, event_id, users)
            async with running_admitter(redis_url, secret, sweep_seconds=0.5) as admitter:

                async def everyone_admitted() -> bool:
                    # The admitter's count trails Redis by the moment it takes to read the reply.
                    in_checkout = await redis.zcard(keys.checkout(event_id))
                    return in_checkout == users and admitter.admitted == users

                await wait_for(everyone_admitted, 40, "all users to be admitted", interval=0.2)
            views = (await scripts.status(event_id, sessions)).sessions
            admitted_ms = [v.record.admitted_ms for v in views if v.record]
            assert len(admitted_ms) == users
            assert admitted_ms == sorted(admitted_ms), "admitted out of join order"
            span = (max(admitted_ms) - min(admitted_ms)) / 1000
            # The bucket holds a tenth of a second's worth (10 users), the rest come at 100/s:
            # 9.9 s at best. Faster means the rate was exceeded (a slow machine only makes it
            # slower, which wait_for bounds). And no second ever holds more than the rate plus
            # the bucket.
            assert span >= 9.0, f"1000 users at 100/s took only {span:.2f} s"
            busiest = max(
                sum(1 for t in admitted_ms if start <= t < start + 1000) for start in admitted_ms
            )
            assert busiest <= rate + rate // 10, f"{busiest} admitted within one second"

    asyncio.run(body())


def test_admitters_racing_on_one_event_without_locks_keep_the_cap_and_the_order(
    redis_url: str, event_id: str
) -> None:
    """Correctness does not rest on the lock: three admission loops on one event at once."""
    users, cap = 400, 20

    async def body() -> None:
        async with Redis.from_url(redis_url) as redis:
            scripts = Scripts(redis)
            await create_event(redis, event_id, max_concurrent=cap, rate=100_000)
            clock = RedisClock()
            await clock.sync(redis)
            loops = [
                EventWorker(
                    event_id,
                    Scripts(redis),
                    batch_size=7,
                    sweep_seconds=0.05,
                    clock=clock,
                    redis_outage=Outage("Redis", logging.getLogger(__name__)),
                    on_change=lambda _event: None,
                )
                for _ in range(3)
            ]
            tasks = [asyncio.create_task(loop.run()) for loop in loops]
            sessions = await join_users(scripts, event_id, users)
            most_seen, finished = 0, 0
            finishing: set[str] = set()
            prefix_violations = []

            async def finish_later(sid: str) -> None:
                nonlocal finished
                await asyncio.sleep(random.uniform(0.001, 0.01))
                outcome = await scripts.finish(event_id, sid, Status.COMPLETED, "completed")
                assert outcome is FinishOutcome.DONE
                finished += 1

            async def sample() -> None:
                nonlocal most_seen
                while finished < users:
                    most_seen = max(most_seen, await redis.zcard(keys.checkout(event_id)))
                    await asyncio.sleep(0.002)

            sampler = asyncio.create_task(sample())
            finishers = []
            while finished < users:
                states = await statuses(scripts, event_id, sessions)
                reached = [i for i, s in enumerate(states) if s is not Status.QUEUED]
                # FIFO: whoever has been admitted is always a prefix of the join order.
                if reached != list(range(len(reached))):
                    prefix_violations.append(reached[:10])
                for i in reached:
                    sid = sessions[i]
                    if states[i] is Status.READY and sid not in finishing:
                        finishing.add(sid)
                        finishers.append(asyncio.create_task(finish_later(sid)))
                await asyncio.sleep(0.003)
            await asyncio.gather(*finishers)
            await sampler
            for loop in loops:
                loop.stop()
            await asyncio.gather(*tasks)
            assert not prefix_violations
            assert most_seen == cap  # the cap was reached, and never passed
            assert sum(loop.admitted for loop in loops) == users  # nobody admitted twice
            assert sum(1 for loop in loops if loop.admitted) >= 2, "the loops never raced"
            assert set(await statuses(scripts, event_id, sessions)) == {Status.COMPLETED}

    asyncio.run(body())


def test_a_script_error_is_logged_as_a_bug_and_counted_not_retried_as_an_outage(
    redis_url: str, event_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A record the admit script cannot read makes every call fail with a ResponseError: that
    is a bug (traceback, ``waitroom_internal_errors_total``), not "Redis unavailable"."""

    async def body() -> tuple[EventWorker, Outage]:
        redis = Redis.from_url(redis_url)
        try:
            scripts = Scripts(redis)
            await create_event(redis, event_id, max_concurrent=5, rate=100)
            first, _ = await join_users(scripts, event_id, 2)
            await redis.hset(keys.sessions(event_id), str(ticket_of_session(first)), "{broken")
            clock = RedisClock()
            await clock.sync(redis)
            outage = Outage("Redis", logging.getLogger("test.admission"))
            worker = EventWorker(
                event_id,
                scripts,
                batch_size=10,
                sweep_seconds=0.05,
                clock=clock,
                redis_outage=outage,
                on_change=lambda _event: None,
            )
            task = asyncio.create_task(worker.run())

            async def counted() -> bool:
                return internal_errors() >= before + 2

            await wait_for(counted, 30, "the script error to be counted twice")
            worker.stop()
            await asyncio.wait_for(task, 10)
            return worker, outage
        finally:
            await redis.aclose()

    def internal_errors() -> float:
        sample = REGISTRY.get_sample_value("waitroom_internal_errors_total", {"where": "admission"})
        return sample or 0.0

    before = internal_errors()
    with caplog.at_level(logging.WARNING):
        worker, outage = asyncio.run(body())
    assert (outage.down, outage.outages) == (False, 0)
    assert worker.admitted == 0
    bugs = [r for r in caplog.records if r.getMessage().startswith("admission failed")]
    assert bugs and all(r.exc_info is not None for r in bugs)
    assert not [r for r in caplog.records if "unavailable" in r.getMessage()]
