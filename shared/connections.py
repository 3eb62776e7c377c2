"""Building the Redis client every process uses, from settings.

The mode (one server, Redis Cluster, Sentinel), TLS, auth and durability come from the
``WAITROOM_REDIS_*`` settings (``shared.redis_config``); the clients are in
``shared.redis_modes``. The Kafka clients are in ``shared.kafka``.
"""

from __future__ import annotations

from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from shared.redis_config import Mode, redis_options
from shared.redis_modes import WaitroomRedis, make_cluster
from shared.settings import CommonSettings


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """The master's pool as Sentinel names it, waiting for a free connection when all are busy
    (as the single-server client does) instead of failing."""


def redis_client(
    settings: CommonSettings, *, max_connections: int | None = None, once: bool = False
) -> Redis:
    """An asyncio Redis client; connection errors surface to the caller's retry loop.

    With ``max_connections``, callers beyond that many concurrent commands wait (up to 10 s)
    for a free connection instead of opening more, so a burst of requests cannot open
    thousands of connections (or fail with "Too many connections" at redis-py's default 100).

    Raises ``SettingsError`` for Redis settings that cannot work together. In cluster mode the
    client is a ``RedisCluster``: it has the same commands for what the waitroom sends (every
    command and script touches one slot), and what differs (pipelined scripts, ``WAIT``) goes
    through ``shared.redis_modes.pinned``.

    With ``once``, every command is tried once: for the start-up check. redis-py retries
    connection errors, and an authentication error is one: against a server that wants a
    password and got none, NOAUTH, the health check's PING and the retries kept the first
    command going past the check's 10 s (measured: a Sentinel with ``requirepass``), so the
    check called Redis down instead of naming the missing password.
    """
    options = redis_options(settings)
    if once:
        for connection in (options.connection, options.sentinel_connection):
            connection["retry"] = Retry(NoBackoff(), 0)
    if options.mode is Mode.CLUSTER:
        cluster = make_cluster(options.seeds, options.connection, max_connections)
        cluster.durability = options.durability
        # Not a subclass of Redis, but answers every call the processes make of one.
        return cast(Redis, cluster)
    limit: dict[str, Any] = {}
    if max_connections is not None:
        limit = {"max_connections": max_connections, "timeout": 10}
    client: WaitroomRedis
    if options.mode is Mode.SENTINEL:
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            options.seeds, sentinel_kwargs=options.sentinel_connection
        )
        sentinel_pool = _BlockingSentinelPool if limit else SentinelConnectionPool
        client = sentinel.master_for(
            options.master_name,
            redis_class=WaitroomRedis,
            connection_pool_class=sentinel_pool,
            **options.connection,
            **limit,
        )
    else:
        pool_options = dict(options.connection)
        if pool_options.pop("ssl", False):
            pool_options["connection_class"] = SSLConnection
        pool_class = BlockingConnectionPool if limit else ConnectionPool
        client = WaitroomRedis(connection_pool=pool_class(**pool_options, **limit))
        client.auto_close_connection_pool = True
    client.durability = options.durability
    return client
