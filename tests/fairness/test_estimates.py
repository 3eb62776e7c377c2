"""Wait estimates from the measured admission rate, and the new fields on the wire."""

from __future__ import annotations

import asyncio
import statistics

import pytest
from redis.asyncio import Redis

from shared.events import EventConfig, EventState, EventStore
from shared.proto import waitroom_pb2 as pb
from shared.proto import waitroom_pb2_grpc
from shared.scripts import Scripts
from shared.sessions import Status
from shared.settings import AdmitterSettings, CommonSettings, KafkaClientSettings
from shared.timefmt import format_ms
from tests.admitter.admitter_support import wait_for
from tests.fairness.fairness_support import join_all, scheduled_event
from waitroom_admitter.worker import Admitter

RATE = 20.0


def test_the_estimate_at_join_is_within_a_quarter_of_the_real_wait_for_the_median_user(
    redis_url: str, event_id: str
) -> None:
    async def body() -> tuple[list[float], list[float]]:
        async with Redis.from_url(redis_url) as redis:
            s = Scripts(redis)
            config = EventConfig(event_id, rate=RATE, max_concurrent=100_000)
            await EventStore(redis, s).create(config)
            common = CommonSettings(redis_url=redis_url, kafka_bootstrap_servers="")
            admitter = Admitter(
                common, KafkaClientSettings(), AdmitterSettings(sweep_seconds=0.2), replica_id="x"
            )
            task = asyncio.create_task(admitter.run())
            try:
                warmup = await join_all(s, event_id, [f"warm-{i}" for i in range(200)])

                async def measured() -> bool:
                    # 120 admitted at 20/s: six seconds of busy time behind the measured rate.
                    views = (await s.status(event_id, warmup)).sessions
                    ready = [v for v in views if v.record and v.record.status is Status.READY]
                    return len(ready) >= 120

                await wait_for(measured, 60, "the warm-up admissions")
                joined = [await s.join(event_id, f"user-{i}") for i in range(100)]
                estimates = [j.position / j.rate for j in joined]
                sessions = [j.session_id for j in joined]

                async def all_admitted() -> bool:
                    views = (await s.status(event_id, sessions)).sessions
                    return all(v.record and v.record.status is Status.READY for v in views)

                await wait_for(all_admitted, 120, "every user admitted")
                views = (await s.status(event_id, sessions)).sessions
                real = [
                    (v.record.admitted_ms - v.record.queued_ms) / 1000 for v in views if v.record
                ]
            finally:
                admitter.stop()
                await asyncio.wait_for(task, 15)
            return estimates, real

    estimates, real = asyncio.run(body())
    # The estimate uses the measured rate (set by the running admitter), not only the config.
    median_estimate, median_real = statistics.median(estimates), statistics.median(real)
    assert median_real > 2  # they really waited (so the comparison means something)
    assert abs(median_estimate - median_real) <= 0.25 * median_real, (median_estimate, median_real)


def test_join_status_and_stream_carry_the_opening_and_an_estimate(
    redis_url: str, event_id: str, stub: waitroom_pb2_grpc.WaitroomServiceStub
) -> None:
    async def create() -> int:
        async with Redis.from_url(redis_url) as redis:
            return await scheduled_event(redis, event_id, 3_600_000, rate=5)

    opens = asyncio.run(create())
    first = stub.JoinQueue(pb.JoinQueueRequest(user_id="a", event_id=event_id))
    second = stub.JoinQueue(pb.JoinQueueRequest(user_id="b", event_id=event_id))
    assert (first.position, first.opens_at) == (0, format_ms(opens))
    # An hour until the opening, then half the pre-queue at 5/s.
    assert 3590 <= second.estimated_wait_seconds <= 3601
    status = stub.GetQueueStatus(pb.GetQueueStatusRequest(session_id=first.session_id))
    assert (status.position, status.opens_at) == (0, format_ms(opens))
    assert 3590 <= status.estimated_wait_seconds <= 3601
    request = pb.StreamPositionRequest(session_id=first.session_id)
    update = next(iter(stub.StreamQueuePosition(request)))
    assert (update.position, update.opens_at) == (0, format_ms(opens))
    assert update.estimated_wait_seconds == pytest.approx(status.estimated_wait_seconds, abs=2)

    async def plain() -> None:
        async with Redis.from_url(redis_url) as redis:
            config = EventConfig(f"{event_id}-p", rate=4, state=EventState.PAUSED)
            await EventStore(redis).create(config)

    asyncio.run(plain())
    joins = [
        stub.JoinQueue(pb.JoinQueueRequest(user_id=f"u{i}", event_id=f"{event_id}-p"))
        for i in range(8)
    ]
    # Without a measured rate yet, the configured one: position / 4 per second, rounded up.
    assert [j.estimated_wait_seconds for j in joins] == [1, 1, 1, 1, 2, 2, 2, 2]
    assert all(j.opens_at == "" for j in joins)
