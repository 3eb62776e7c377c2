"""Many joins at once through the real server: one place per user, no gaps, no duplicates."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import grpc
from api_support import ApiProcess, make_event, with_scripts

from shared import outbox
from shared.proto import waitroom_pb2 as pb
from shared.proto.waitroom_pb2_grpc import WaitroomServiceStub
from shared.scripts import Scripts


def test_1000_concurrent_joins_from_200_users_give_200_places(
    api_process: ApiProcess, redis_url: str
) -> None:
    users, repeats = 200, 5
    make_event(redis_url, "concert1")
    requests = [f"user{i}" for i in range(users) for _ in range(repeats)]
    random.Random(7).shuffle(requests)

    async def join_all() -> list[tuple[str, pb.JoinQueueResponse]]:
        async with grpc.aio.insecure_channel(api_process.address) as channel:
            stub = WaitroomServiceStub(channel)

            async def one(user: str) -> tuple[str, pb.JoinQueueResponse]:
                request = pb.JoinQueueRequest(user_id=user, event_id="concert1")
                return user, await stub.JoinQueue(request, timeout=60)

            return await asyncio.gather(*(one(user) for user in requests))

    answers = asyncio.run(join_all())
    assert len(answers) == users * repeats

    by_user: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for user, answer in answers:
        by_user[user].add((answer.session_id, answer.position))
    # Every user got one session and one place, however often they asked.
    assert all(len(places) == 1 for places in by_user.values())
    places = [next(iter(p)) for p in by_user.values()]
    assert len({session for session, _ in places}) == users
    assert sorted(position for _, position in places) == list(range(1, users + 1))

    async def recorded(s: Scripts) -> tuple[int, list[outbox.OutboxEntry]]:
        queue = await s.status("concert1", [])
        return queue.queue_length, await outbox.read(s.redis, "concert1", 10 * users)

    queue_length, entries = with_scripts(redis_url, recorded)
    assert queue_length == users
    # One queue.joined per session created, with the position it was given; nothing else.
    assert sorted(
        (e.topic, e.fields["session_id"], e.fields["position"]) for e in entries
    ) == sorted(("queue.joined", session, position) for session, position in places)
