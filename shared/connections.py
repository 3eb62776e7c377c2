"""Building the Redis client every process uses, from settings.

The Kafka clients are in ``shared.kafka``.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis

from shared.settings import CommonSettings


def redis_client(settings: CommonSettings, *, max_connections: int | None = None) -> Redis:
    """An asyncio Redis client; connection errors surface to the caller's retry loop.

    With ``max_connections``, callers beyond that many concurrent commands wait (up to 10 s)
    for a free connection instead of opening more, so a burst of requests cannot open
    thousands of connections (or fail with "Too many connections" at redis-py's default 100).
    """
    options: dict[str, Any] = {
        "socket_connect_timeout": 2,
        "socket_timeout": 10,
        "health_check_interval": 15,
        "decode_responses": False,
    }
    if max_connections is None:
        return Redis.from_url(settings.redis_url, **options)
    pool = BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=max_connections, timeout=10, **options
    )
    return Redis.from_pool(pool)
