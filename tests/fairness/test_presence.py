"""Abandoned places are given back: presence from polls and streams, through the real API."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import grpc
from redis.asyncio import Redis

from shared import keys, outbox
from shared.events import EventConfig, EventState, EventStore
from shared.proto import waitroom_pb2 as pb
from shared.proto import waitroom_pb2_grpc
from shared.scripts import Scripts
from shared.sessions import Status
from tests.fairness.fairness_support import redis_now_ms

IDLE = 4.0


def test_users_who_stop_polling_are_dropped_when_reached_and_streams_keep_users_present(
    redis_url: str, event_id: str, stub: waitroom_pb2_grpc.WaitroomServiceStub
) -> None:
    async def create() -> None:
        async with Redis.from_url(redis_url) as redis:
            config = EventConfig(
                event_id,
                state=EventState.PAUSED,
                max_concurrent=2,
                rate=1000,
                idle_timeout_seconds=IDLE,
            )
            await EventStore(redis).create(config)

    asyncio.run(create())
    names = ["poller-1", "gone-1", "streamer", "gone-2", "poller-2"]
    sid = {
        n: stub.JoinQueue(pb.JoinQueueRequest(user_id=n, event_id=event_id)).session_id
        for n in names
    }
    stop = threading.Event()
    seen: list[pb.PositionUpdate] = []
    stream = stub.StreamQueuePosition(pb.StreamPositionRequest(session_id=sid["streamer"]))

    def watch() -> None:
        with contextlib.suppress(grpc.RpcError):  # cancelled at the end
            for update in stream:
                seen.append(update)

    def poll() -> None:
        while not stop.is_set():
            for n in ("poller-1", "poller-2"):
                stub.GetQueueStatus(pb.GetQueueStatusRequest(session_id=sid[n]))
            stop.wait(0.3)

    threads = [threading.Thread(target=watch, daemon=True), threading.Thread(target=poll)]
    for thread in threads:
        thread.start()

    async def admit() -> tuple[list[Status], list[str], list[tuple[str, str]]]:
        async with Redis.from_url(redis_url) as redis:
            s = Scripts(redis)
            joined = await redis_now_ms(redis)
            # Everyone has been in the queue longer than the idle timeout.
            while await redis_now_ms(redis) < joined + IDLE * 1000 + 1500:
                await asyncio.sleep(0.1)
            await EventStore(redis, s).set_state(event_id, EventState.OPEN)
            result = await s.admit(event_id, 10)
            assert result is not None
            assert (result.admitted, result.abandoned) == (2, 1)
            views = (await s.status(event_id, [sid[n] for n in names])).sessions
            statuses = [v.record.status if v.record else Status.UNSPECIFIED for v in views]
            reasons = [v.record.reason if v.record else "" for v in views]
            left = [
                (e.fields["session_id"], e.fields["reason"])
                for e in await outbox.read(redis, event_id, 100)
                if e.topic == "queue.left"
            ]
            presence = await redis.strlen(keys.presence(event_id))
            assert presence > 0
            return statuses, reasons, left

    try:
        statuses, reasons, left = asyncio.run(admit())
    finally:
        stop.set()
        stream.cancel()
        for thread in threads:
            thread.join(5)
    # The slot of the absent user went to the next present one: the streamer.
    assert statuses == [
        Status.READY,
        Status.CANCELLED,
        Status.READY,
        Status.QUEUED,
        Status.QUEUED,
    ]
    assert reasons[1] == "abandoned"
    assert left == [(sid["gone-1"], "abandoned")]
    assert seen and seen[0].status == pb.SESSION_STATUS_QUEUED


def test_presence_is_written_once_per_quarter_timeout_not_once_per_poll(
    redis_url: str, event_id: str, stub: waitroom_pb2_grpc.WaitroomServiceStub
) -> None:
    async def create() -> None:
        async with Redis.from_url(redis_url) as redis:
            config = EventConfig(event_id, state=EventState.PAUSED, idle_timeout_seconds=600)
            await EventStore(redis).create(config)

    asyncio.run(create())
    session = stub.JoinQueue(pb.JoinQueueRequest(user_id="u", event_id=event_id)).session_id

    async def writes() -> int:
        async with Redis.from_url(redis_url) as redis:
            info = await redis.info("commandstats")
            return int(info.get("cmdstat_setrange", {}).get("calls", 0))

    before = asyncio.run(writes())
    started = time.monotonic()
    for _ in range(50):
        stub.GetQueueStatus(pb.GetQueueStatusRequest(session_id=session))
    assert time.monotonic() - started < 150  # the 50 polls were well within a quarter timeout
    assert asyncio.run(writes()) - before == 1
