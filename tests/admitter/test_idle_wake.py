"""An idle event's admission loop waits for an announcement, not the sweep, and every path a
user relies on announces: a join with room, raising the cap, resuming, the opening's time.

The sweeps here are an hour long, so a user admitted within seconds was admitted because the
change woke the loop, not because a sweep or a timer came round.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from admitter_support import create_event, join_users, running_admitter, wait_for
from redis.asyncio import Redis

from shared import keys
from shared.events import EventConfig, EventState, EventStore
from shared.scripts import Scripts
from shared.sessions import Status
from waitroom_admitter import schedule
from waitroom_admitter.admission import EventWorker
from waitroom_admitter.worker import Admitter

HOUR = 3600.0
#: How soon an announced change must be acted on (a loaded test machine included).
AT_ONCE = 3.0


async def idle_worker(admitter: Admitter, event_id: str) -> EventWorker:
    """The event's admission loop, once it has found the event idle."""

    async def found() -> EventWorker | None:
        owned = admitter.owned.get(event_id)
        return owned.worker if owned is not None and owned.worker.idle else None

    worker: EventWorker = await wait_for(found, 10, "the event owned and found idle")
    return worker


@asynccontextmanager
async def idle_event(
    redis_url: str, event_id: str, secret: str, sweep_seconds: float = HOUR, **settings: Any
) -> AsyncIterator[tuple[Scripts, EventStore, EventWorker]]:
    """A new event (admitting 100/s), owned by an admitter whose loop has found it idle."""
    async with Redis.from_url(redis_url) as redis:
        await create_event(redis, event_id, rate=100, **settings)
        async with running_admitter(redis_url, secret, sweep_seconds=sweep_seconds) as admitter:
            yield Scripts(redis), EventStore(redis), await idle_worker(admitter, event_id)


async def admitted(scripts: Scripts, event_id: str, session: str) -> bool:
    (view,) = (await scripts.status(event_id, [session])).sessions
    return view.record is not None and view.record.status is Status.READY


def test_an_idle_event_is_not_called_every_sweep(
    redis_url: str, event_id: str, process_env: dict[str, str]
) -> None:
    async def body() -> None:
        secret = process_env["WAITROOM_JWT_SECRET"]
        async with idle_event(redis_url, event_id, secret, sweep_seconds=0.05) as (_, _, worker):
            calls = worker.calls
            await asyncio.sleep(2)  # 40 sweeps: 40 admit calls when the sweep bounded it
            assert schedule.IDLE_WAIT_SECONDS / 2 > 2
            assert worker.calls - calls <= 1

    asyncio.run(body())


def test_an_idle_event_admits_at_once_when_someone_joins(
    redis_url: str, event_id: str, process_env: dict[str, str]
) -> None:
    async def body() -> None:
        secret = process_env["WAITROOM_JWT_SECRET"]
        async with idle_event(redis_url, event_id, secret) as (scripts, _, _):
            (session,) = await join_users(scripts, event_id, 1)
            await wait_for(
                lambda: admitted(scripts, event_id, session), AT_ONCE, "the joiner admitted"
            )

    asyncio.run(body())


def test_raising_the_cap_or_resuming_admits_at_once(
    redis_url: str, event_id: str, process_env: dict[str, str]
) -> None:
    async def body() -> None:
        secret = process_env["WAITROOM_JWT_SECRET"]
        async with idle_event(redis_url, event_id, secret, max_concurrent=1) as (
            scripts,
            store,
            _,
        ):
            first, second = await join_users(scripts, event_id, 2)
            await wait_for(lambda: admitted(scripts, event_id, first), AT_ONCE, "the first")
            # Checkout full: the second join announced nothing to admit.
            await asyncio.sleep(0.5)
            assert not await admitted(scripts, event_id, second)
            await store.update(event_id, max_concurrent=2)
            await wait_for(
                lambda: admitted(scripts, event_id, second), AT_ONCE, "admitted on the update"
            )
            # Paused: a join with room announces nothing to admit either.
            await store.set_state(event_id, EventState.PAUSED)
            await store.update(event_id, max_concurrent=3)
            (third,) = await join_users(scripts, event_id, 1, first=2)
            await asyncio.sleep(0.5)
            assert not await admitted(scripts, event_id, third)
            await store.set_state(event_id, EventState.OPEN)
            await wait_for(
                lambda: admitted(scripts, event_id, third), AT_ONCE, "admitted on resuming"
            )

    asyncio.run(body())


def test_an_opening_passes_on_time_in_an_idle_event(
    redis_url: str, event_id: str, process_env: dict[str, str]
) -> None:
    async def body() -> None:
        secret = process_env["WAITROOM_JWT_SECRET"]
        opens_ms = int(time.time() * 1000) + 2500
        async with idle_event(redis_url, event_id, secret, opens_ms=opens_ms) as (scripts, _, _):
            # In the pre-queue: nothing is announced to admit until the draw.
            (session,) = await join_users(scripts, event_id, 1)
            await wait_for(
                lambda: admitted(scripts, event_id, session),
                (opens_ms / 1000 - time.time()) + AT_ONCE,
                "the pre-queue's user admitted at the opening",
            )
            assert time.time() * 1000 >= opens_ms - 50  # not before it (clock skew aside)

    asyncio.run(body())


def test_a_new_event_is_taken_at_the_next_sweep_though_listing_is_rare(
    redis_url: str, event_id: str, process_env: dict[str, str]
) -> None:
    async def body() -> None:
        secret = process_env["WAITROOM_JWT_SECRET"]
        # Every event owned: the sweeps list the ids only every LIST_EVERY sweeps (5 s here),
        # unless the count changes or an unowned event is announced, as a new one is.
        async with idle_event(redis_url, event_id, secret, sweep_seconds=0.5) as (_, store, _):
            await asyncio.sleep(1.5)
            await store.create(EventConfig(f"{event_id}-new"))
            async with Redis.from_url(redis_url) as redis:
                lock = keys.lock(f"{event_id}-new")
                await wait_for(lambda: redis.exists(lock), 1.5, "the new event's lock taken")

    asyncio.run(body())
