"""What the fairness tests share: scheduled events, joins, draws and reading the queue back."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from shared import draw, keys
from shared.events import EventConfig, EventStore
from shared.ids import ticket_of_session
from shared.scripts import DrawScripts, Scripts
from waitroom_admitter.draw import DrawRunner


async def redis_now_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def scheduled_event(redis: Redis, event_id: str, opens_in_ms: int, **settings: Any) -> int:
    """Create ``event_id`` opening ``opens_in_ms`` from now (Redis's clock); the opening."""
    opens = await redis_now_ms(redis) + opens_in_ms
    await EventStore(redis).create(EventConfig(event_id, opens_ms=opens, **settings))
    return opens


async def open_now(redis: Redis, event_id: str) -> None:
    """Move the opening to now and wait until Redis's clock has passed it."""
    opens = await redis_now_ms(redis) + 20
    await EventStore(redis).update(event_id, opens_ms=opens)
    while await redis_now_ms(redis) <= opens:
        await asyncio.sleep(0.01)


async def join_all(scripts: Scripts, event_id: str, users: list[str]) -> list[str]:
    """Join users one by one (so ticket order is the list's order); their session ids."""
    sessions = []
    for start in range(0, len(users), 200):
        results = await scripts.join_many(event_id, users[start : start + 200])
        for result in results:
            assert not isinstance(result, Exception), result
            sessions.append(result.session_id)
    return sessions


async def run_draw(scripts: Scripts, event_id: str, chunk: int = 97) -> None:
    assert await DrawRunner(event_id, DrawScripts(scripts), chunk).run(asyncio.Event())


async def positions(scripts: Scripts, event_id: str, sessions: list[str]) -> list[int]:
    """Each session's position (0: not waiting or not drawn), read 500 at a time."""
    out = []
    for start in range(0, len(sessions), 500):
        result = await scripts.status(event_id, sessions[start : start + 500])
        out += [v.rank + 1 for v in result.sessions]
    return out


async def drawn_places(redis: Redis, event_id: str) -> tuple[list[int], list[int]]:
    """The draw as Redis holds it: (ticket at each place, place of each ticket)."""
    order = await redis.get(keys.draw_order(event_id)) or b""
    rank = await redis.get(keys.draw_rank(event_id)) or b""
    return draw.unpack(order).tolist(), draw.unpack(rank).tolist()


def tickets(sessions: list[str]) -> list[int]:
    return [ticket_of_session(s) for s in sessions]
