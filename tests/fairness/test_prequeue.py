"""A scheduled opening on the real Redis: the pre-queue, the draw in chunks, then admission."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from shared import draw, keys
from shared.errors import Refused
from shared.events import EventConfig, EventStore
from shared.scripts import DrawScripts, Scripts
from shared.sessions import Status
from tests.fairness.fairness_support import (
    drawn_places,
    join_all,
    open_now,
    positions,
    run_draw,
    scheduled_event,
)


def test_before_the_opening_joins_wait_unplaced_and_a_second_join_keeps_the_place(
    redis_url: str, event_id: str
) -> None:
    async def body() -> None:
        async with Redis.from_url(redis_url) as redis:
            s = Scripts(redis)
            opens = await scheduled_event(redis, event_id, 3_600_000)
            first = await s.join(event_id, "u1")
            second = await s.join(event_id, "u2")
            again = await s.join(event_id, "u1")
            assert (first.position, first.queue_length, first.opens_ms) == (0, 1, opens)
            assert (second.position, second.queue_length) == (0, 2)
            assert (again.session_id, again.created, again.position) == (
                first.session_id,
                False,
                0,
            )
            # A pre-queue place lasts from the opening, not from the join.
            assert first.expires_ms == opens + 2 * 3600 * 1000
            status = await s.status(event_id, [first.session_id])
            assert (status.opens_ms, status.drawing, status.queue_length) == (opens, True, 2)
            assert status.sessions[0].rank == -1
            # Nobody is admitted before the draw, and admit says when to look again.
            admit = await s.admit(event_id, 10)
            assert admit is not None and admit.admitted == 0 and not admit.draw_due
            assert 0 < admit.retry_ms <= 3_600_000

    asyncio.run(body())


def test_the_draw_places_the_prequeue_at_random_ahead_of_later_joins_in_arrival_order(
    redis_url: str, event_id: str
) -> None:
    async def body() -> None:
        async with Redis.from_url(redis_url) as redis:
            s = Scripts(redis)
            await scheduled_event(redis, event_id, 3_600_000, rate=1_000_000, max_concurrent=10**6)
            early = await join_all(s, event_id, [f"early-{i}" for i in range(300)])
            # Two leave before the draw: their places become holes, nobody else's shifts.
            for gone in (early[5], early[200]):
                await s.leave(event_id, gone)
            await open_now(redis, event_id)
            late = await join_all(s, event_id, [f"late-{i}" for i in range(40)])
            assert await positions(s, event_id, early[:3]) == [0, 0, 0]
            # Before the draw, later joins already count the 298 drawn ahead of them.
            assert await positions(s, event_id, late[:2]) == [299, 300]
            admit = await s.admit(event_id, 10)
            assert admit is not None and admit.draw_due and admit.admitted == 0

            await run_draw(s, event_id, chunk=37)

            staying = [sid for sid in early if sid not in (early[5], early[200])]
            placed = await positions(s, event_id, staying)
            assert sorted(placed) == list(range(1, 299))
            assert placed != sorted(placed)  # not join order (1 in 298! that it is)
            assert await positions(s, event_id, late) == list(range(299, 339))
            order, rank = await drawn_places(redis, event_id)
            expected = draw.permutation(
                (await redis.hget(keys.draw(event_id), "seed")).decode(), 300
            )
            assert order == expected.tolist()
            assert [order[p - 1] for p in rank] == list(range(1, 301))
            # Admission follows the drawn places, skipping the two that left.
            by_place = sorted(staying, key=lambda sid: placed[staying.index(sid)])
            admitted: list[str] = []
            while len(admitted) < 338:
                result = await s.admit(event_id, 50)
                assert result is not None and not result.draw_due
                views = (await s.status(event_id, by_place + late)).sessions
                admitted = [
                    v.session_id for v in views if v.record and v.record.status is Status.READY
                ]
                assert admitted == (by_place + late)[: len(admitted)]  # a FIFO prefix by place
            assert (await s.status(event_id, [])).queue_length == 0

    asyncio.run(body())


def test_a_chunk_is_written_once_in_order_and_the_seed_revealed_once(
    redis_url: str, event_id: str
) -> None:
    async def body() -> None:
        async with Redis.from_url(redis_url) as redis:
            s = Scripts(redis)
            d = DrawScripts(s)
            await scheduled_event(redis, event_id, 3_600_000)
            await join_all(s, event_id, [f"u{i}" for i in range(10)])
            await open_now(redis, event_id)
            begun = await d.begin(event_id)
            assert (begun.stage, begun.entrants, begun.written) == ("DRAW", 10, 0)
            order = draw.permutation(begun.seed, 10)
            rank = draw.ranks(order)
            assert await d.write(event_id, 1, draw.pack(order[:4]), draw.pack(rank[:4])) == 4
            # A repeat of the same chunk, or one that skips ahead, changes nothing.
            assert await d.write(event_id, 1, draw.pack(order[:4]), draw.pack(rank[:4])) == 4
            assert await d.write(event_id, 7, draw.pack(order[6:]), draw.pack(rank[6:])) == 4
            assert await d.finish(event_id, 10) == ("WRITING", 4)
            assert await d.write(event_id, 5, draw.pack(order[4:]), draw.pack(rank[4:])) == 10
            assert await d.finish(event_id, 10) == ("DONE", 10)
            assert await d.finish(event_id, 10) == ("DONE", 10)
            reveals = [
                e
                for _, e in await redis.xrange(keys.outbox(event_id))
                if e[b"t"] == b"waitroom.draws"
            ]
            kinds = [b'"revealed"' in e[b"p"] for e in reveals]
            assert kinds.count(True) == 1 and kinds.count(False) == 2  # committed twice (moved)

    asyncio.run(body())


def test_an_opening_can_only_be_set_before_anyone_queues_and_moved_until_it_passes(
    redis_url: str, event_id: str
) -> None:
    async def body() -> None:
        async with Redis.from_url(redis_url) as redis:
            s = Scripts(redis)
            store = EventStore(redis, s)
            await store.create(EventConfig(event_id))
            await s.join(event_id, "already-here")
            with pytest.raises(Refused, match="already has users queued"):
                await store.update(event_id, opens_ms=4_000_000_000_000)
            other = f"{event_id}-b"
            await scheduled_event(redis, other, 3_600_000)
            commitment = (await store.draw_info(other)).commitment  # type: ignore[union-attr]
            await s.join(other, "early")
            with pytest.raises(Refused, match="pre-queue"):
                await store.update(other, opens_ms=0)
            moved = await store.update(other, opens_ms=4_000_000_000_000)
            assert moved.opens_ms == 4_000_000_000_000
            info = await store.draw_info(other)
            assert info is not None and info.commitment == commitment and info.seed == ""
            await open_now(redis, other)
            await run_draw(s, other)
            with pytest.raises(Refused, match="has passed"):
                await store.update(other, opens_ms=4_000_000_000_000)
            info = await store.draw_info(other)
            assert info is not None and draw.commitment(info.seed) == commitment

    asyncio.run(body())
