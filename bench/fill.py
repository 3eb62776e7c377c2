"""Making load fast: a long queue straight through the join script, pipelined, several processes.

Going through the API would take minutes for a million users; the join script is exactly what
the API runs per join, so a queue built this way is the queue the API would have built.
redis-py's reply parsing is the cost on the client side (~0.1 ms per join in pure Python), so
several processes each keep two pipelines in flight.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from shared import keys
from shared.events import EventConfig, EventState, EventStore
from shared.ids import ticket_of_session
from shared.scripts import JoinResult, Scripts

BATCH = 1000
PIPELINES = 2  # per process: one is parsed while Redis runs the other


@dataclass(frozen=True)
class Filled:
    joined: int
    refused: int
    sampled: list[str]  # session ids of every ``sample_every``-th user, in ticket order
    sampled_users: list[str] = field(default_factory=list)  # their user ids, in that order
    cpu: float = 0.0  # CPU seconds the fill processes used
    seconds: float = 0.0  # wall time of the fill


async def create_event(redis_url: str, config: EventConfig) -> EventConfig:
    redis = Redis.from_url(redis_url)
    try:
        return await EventStore(redis).create(config)
    finally:
        await redis.aclose()


async def _fill_checkout(redis_url: str, event_id: str) -> int:
    redis = Redis.from_url(redis_url)
    scripts = Scripts(redis)
    store = EventStore(redis, scripts)
    try:
        config = await store.get(event_id)
        users = [f"checkout-{n}" for n in range(config.max_concurrent)]
        await scripts.join_many(event_id, users)
        await store.update(event_id, state=EventState.OPEN, rate=1_000_000.0)
        admitted = 0
        while admitted < config.max_concurrent:
            result = await scripts.admit(event_id, config.max_concurrent)
            if result is None or not result.admitted:
                break
            admitted += result.admitted
        # Back to the configured rate and state; the outbox was relayed long ago.
        await store.update(event_id, state=config.state, rate=config.rate)
        await redis.delete(keys.outbox(event_id))
        return admitted
    finally:
        await redis.aclose()


def full_checkout_event(redis_url: str, config: EventConfig) -> EventConfig:
    """Create the event with every checkout slot taken, as during a sale once the queue has
    formed: joins then queue up and announce nothing (no admitter could admit anyone)."""
    created = asyncio.run(create_event(redis_url, config))
    admitted = asyncio.run(_fill_checkout(redis_url, config.event_id))
    assert admitted == config.max_concurrent, admitted
    return created


def paused_event(event_id: str, **changes: Any) -> EventConfig:
    """An event that takes joins but admits nobody until opened."""
    return EventConfig(event_id, state=EventState.PAUSED, **changes)


async def _fill_range(
    redis_url: str, event_id: str, prefix: str, users: range, sample_every: int
) -> Filled:
    redis = Redis.from_url(redis_url)
    scripts = Scripts(redis)
    joined = refused = 0
    sampled: list[tuple[str, str]] = []
    batches = [users[i : i + BATCH] for i in range(0, len(users), BATCH)]

    async def run(part: Sequence[range]) -> None:
        nonlocal joined, refused
        for batch in part:
            results = await scripts.join_many(event_id, [f"{prefix}{n}" for n in batch])
            for n, result in zip(batch, results, strict=True):
                if not isinstance(result, JoinResult):
                    refused += 1
                    continue
                joined += 1
                if n % sample_every == 0:
                    sampled.append((result.session_id, f"{prefix}{n}"))

    cpu = time.process_time()
    try:
        await asyncio.gather(*(run(batches[k::PIPELINES]) for k in range(PIPELINES)))
    finally:
        await redis.aclose()
    return Filled(
        joined=joined,
        refused=refused,
        sampled=[sid for sid, _ in sampled],
        sampled_users=[user for _, user in sampled],
        cpu=time.process_time() - cpu,
    )


def _fill_worker(args: tuple[str, str, str, range, int], results: Any) -> None:
    try:
        results.put(asyncio.run(_fill_range(*args)))
    except BaseException as exc:
        results.put(exc)


def fill(
    redis_url: str,
    event_id: str,
    users: int,
    *,
    prefix: str = "user-",
    processes: int = 2,
    sample_every: int = 1000,
) -> Filled:
    """Join ``users`` new users (``prefix`` + number) to ``event_id``."""
    if users <= 0:
        return Filled(0, 0, [])
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    step = -(-users // processes)
    parts = [range(start, min(users, start + step)) for start in range(0, users, step)]
    procs = [
        ctx.Process(
            target=_fill_worker,
            args=((redis_url, event_id, prefix, part, sample_every), results),
            daemon=True,
        )
        for part in parts
    ]
    started = time.monotonic()
    for p in procs:
        p.start()
    outs: list[Filled] = []
    try:
        for _ in procs:
            item = results.get(timeout=1800)
            if isinstance(item, BaseException):
                raise RuntimeError(f"a fill process failed: {item!r}") from item
            outs.append(item)
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    pairs = sorted(
        (pair for o in outs for pair in zip(o.sampled, o.sampled_users, strict=True)),
        key=lambda pair: ticket_of_session(pair[0]),
    )
    return Filled(
        joined=sum(o.joined for o in outs),
        refused=sum(o.refused for o in outs),
        sampled=[sid for sid, _ in pairs],
        sampled_users=[user for _, user in pairs],
        cpu=sum(o.cpu for o in outs),
        seconds=time.monotonic() - started,
    )
