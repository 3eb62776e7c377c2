"""A sale driven straight at Redis through the waitroom's scripts, for comparing deployments
(one server or a cluster, WAIT off or on) in the same run: joins, then admissions, then
checkout outcomes, every step a script call made by ``shared.scripts`` as the processes make it.

Each event's users join with ``concurrency`` calls in flight across all events, then one
admission loop per event admits ``batch`` at a time until everyone is in checkout, then every
session is finished (``finish_many``, as the consumer does). Figures are users per second for
each step, measured by the one client process: what a deployment costs the waitroom's calls.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from shared.backoff import compute_backoff, is_transient
from shared.connections import redis_client
from shared.events import EventConfig, EventStore
from shared.scripts import Scripts
from shared.sessions import Status
from shared.settings import CommonSettings


@dataclass(frozen=True)
class SaleFigures:
    users: int
    join_per_s: float
    admit_per_s: float
    finish_per_s: float


async def _sale(
    settings: CommonSettings, events: list[str], users: int, concurrency: int, batch: int
) -> SaleFigures:
    redis = redis_client(settings, max_connections=concurrency)
    scripts = Scripts(redis)
    store = EventStore(redis, scripts)
    try:
        for event in events:
            await store.create(
                EventConfig(event, max_concurrent=users, rate=1_000_000, checkout_ttl_seconds=3600)
            )
        work = [(event, f"user-{i}") for i in range(users // len(events)) for event in events]
        sessions: list[tuple[str, str]] = []
        gate = asyncio.Semaphore(concurrency)

        async def join(event: str, user: str) -> None:
            async with gate:
                for attempt in range(20):
                    try:
                        joined = await scripts.join(event, user)
                        break
                    except Exception as exc:
                        # What a client does with UNAVAILABLE: too few replicas in time on a
                        # loaded machine (NOREPLICAS), a failover: wait and join again.
                        if not is_transient(exc) or attempt == 19:
                            raise
                        await asyncio.sleep(compute_backoff(attempt))
                sessions.append((event, joined.session_id))

        started = time.perf_counter()
        await asyncio.gather(*(join(e, u) for e, u in work))
        joined = time.perf_counter()

        async def admit_all(event: str) -> None:
            while (result := await scripts.admit(event, batch)) and result.queue_length > 0:
                pass

        await asyncio.gather(*(admit_all(e) for e in events))
        admitted = time.perf_counter()
        chunks = [sessions[i : i + 200] for i in range(0, len(sessions), 200)]
        for chunk in chunks:
            outcomes = [(e, sid, int(Status.COMPLETED), "completed") for e, sid in chunk]
            await scripts.finish_many(outcomes)
        finished = time.perf_counter()
    finally:
        await redis.aclose()
    n = len(work)
    return SaleFigures(
        users=n,
        join_per_s=n / (joined - started),
        admit_per_s=n / (admitted - joined),
        finish_per_s=n / (finished - admitted),
    )


def run_sale(
    settings: CommonSettings, events: list[str], users: int, concurrency: int = 64, batch: int = 100
) -> SaleFigures:
    return asyncio.run(_sale(settings, events, users, concurrency, batch))
