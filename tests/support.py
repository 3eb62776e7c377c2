"""Helpers every test directory uses."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis

from shared.scripts import Scripts

T = TypeVar("T")


def with_scripts(redis_url: str, body: Callable[[Scripts], Awaitable[T]]) -> T:
    """Run ``body`` with Scripts on a fresh asyncio Redis client (created inside the loop)."""

    async def go() -> T:
        client = Redis.from_url(redis_url)
        try:
            return await body(Scripts(client))
        finally:
            await client.aclose()

    return asyncio.run(go())
