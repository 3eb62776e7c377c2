"""The Redis clients of the three modes, and running commands on one connection of the server
that holds a key: what a Redis Cluster makes hard and ``WAIT`` needs.

- ``WaitroomRedis``: one server, or the master Sentinel names (``master_for``): redis-py's
  client, carrying the deployment's ``Durability``.
- ``WaitroomCluster``: redis-py's asyncio ``RedisCluster``. It routes every script by its first
  key, so an event's scripts go to the event's shard (all its keys share the ``{EVENT}`` hash
  tag), follows MOVED and ASK, and retries TRYAGAIN. Its pipelines refuse ``EVALSHA``, so
  pipelined script calls go through ``pinned``, a plain pipeline to the node that serves the key.
- ``pinned``: commands sent in order on one connection to the server holding a key; a ``WAIT``
  at the end then counts exactly the writes before it (``WAIT`` covers the writes of the
  connection it is sent on). In a cluster a script that met a slot migration did not run (the
  reply is MOVED, ASK or TRYAGAIN), so the batch is sent again once the slot map is fresh; a
  node that cannot be reached (its master was killed) has the slot map read again before the
  caller's retry, as redis-py's own commands do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPubSub, RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import AskError, ClusterDownError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.redis_config import Durability

#: How often a pinned batch is sent again while its slot is moving, and the pause between.
#: A reshard moves one slot's keys in milliseconds here (redis-cli --cluster reshard, 100 keys
#: per MIGRATE); 40 x 50 ms rides out a slow one before the caller's own retry takes over.
REDIRECT_ROUNDS = 40
REDIRECT_PAUSE_SECONDS = 0.05

#: Replies that mean "this script did not run here; the slot is moving or moved".
_REDIRECTS = (AskError, TryAgainError, ClusterDownError)


class NotReplicated(ResponseError):
    """Fewer replicas than ``WAITROOM_REDIS_WAIT_REPLICAS`` acknowledged a write in time.

    The write happened on the master and may be lost if it fails now. The message starts with
    ``NOREPLICAS`` (Redis's own word for it), so ``shared.backoff.is_transient`` treats it as an
    outage: the API answers UNAVAILABLE (a retried join or leave is idempotent), the admitter
    and the consumer back off and try again.
    """


class WaitroomRedis(Redis):
    """One Redis server (or the master Sentinel points at) and the durability it is used with."""

    durability: Durability = Durability()


class _ClusterPools:
    """What ``Outage(pool=...)`` needs of a client: dropping idle connections after an outage
    (those opened before it are dead), here on every node of the cluster."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster

    async def disconnect(self, inuse_connections: bool = True) -> None:
        for node in self.cluster.get_nodes():
            if inuse_connections:
                await node.disconnect()
            else:
                await node.disconnect_free_connections()


class WaitroomCluster(RedisCluster):
    """A Redis Cluster client that waits for a free connection instead of failing.

    redis-py's cluster client raises "Too many connections" once a node has ``max_connections``
    busy; the single-server client waits for one (``BlockingConnectionPool``). ``limit`` keeps
    that behaviour: at most ``limit`` commands are in flight in this process, the rest wait.
    """

    durability: Durability = Durability()

    def __init__(self, *args: Any, limit: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gate = asyncio.Semaphore(limit) if limit else None
        self._node_options: dict[str, Any] = {}
        self._node_clients: dict[str, Redis] = {}

    @property
    def connection_pool(self) -> _ClusterPools:
        return _ClusterPools(self)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self._gate is None:
            return await super().execute_command(*args, **kwargs)
        async with self._gate:
            return await super().execute_command(*args, **kwargs)

    def pubsub(self, *args: Any, **kwargs: Any) -> ClusterPubSub:
        return _ReadyPubSub(self, *args, **kwargs)

    def node_client(self, key: str) -> Redis:
        """A plain client of the master serving ``key``'s slot now (one per node, kept)."""
        node = self.get_node_from_key(key)
        if node is None:  # the slot map has a hole: the cluster is failing over
            raise ClusterDownError(f"CLUSTERDOWN no node serves the slot of {key!r} now")
        client = self._node_clients.get(node.name)
        if client is None:
            client = Redis(host=node.host, port=int(node.port), **self._node_options)
            self._node_clients[node.name] = client
        return client

    async def refresh_slots(self) -> None:
        """Read the slot map again (after a MOVED: a slot now lives elsewhere)."""
        await self.nodes_manager.initialize()

    def node_failed(self, key: str) -> None:
        """The master serving ``key`` could not be reached: read the slot map again before
        the next command, as redis-py does when one of its own commands meets a dead node.

        ``node_client`` reads the cached slot map, which only a command through redis-py's
        routing would otherwise refresh. A process whose every call to that shard is
        ``pinned`` (the consumer's ``finish_many``) kept sending to the killed master for good
        after its replica took over: the failed sale in tests/infra/test_secured_cluster.py.
        The flag is redis-py's own, so its commands re-read the map too, once, under its lock.
        """
        node = self.get_node_from_key(key)
        if node is not None:  # asked last for the slot map, as redis-py does
            self.nodes_manager.move_node_to_end_of_cached_nodes(node.name)
        self._initialize = True

    async def aclose(self) -> None:
        clients, self._node_clients = list(self._node_clients.values()), {}
        for client in clients:
            await client.aclose()
        await super().aclose()


class _ReadyPubSub(ClusterPubSub):
    """redis-py's cluster pub/sub picks the node of a channel's slot from the client's slot
    map without reading the map first: a process whose first Redis call is its subscription
    (the API's and the admitter's wake-up listeners) failed with ``KeyError`` on the empty map
    and logged it as a bug every second until another call had read it. Read it first."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self.connection is None and self.connection_pool is None:
            await self.cluster.initialize()
        return await super().execute_command(*args, **kwargs)


def make_cluster(
    seeds: list[tuple[str, int]], options: dict[str, Any], limit: int | None
) -> WaitroomCluster:
    from redis.asyncio.cluster import ClusterNode

    nodes = [ClusterNode(host, port) for host, port in seeds]
    cluster = WaitroomCluster(
        startup_nodes=nodes,
        limit=limit,
        # Per node; the gate above bounds the whole process, pipelines and pub/sub aside.
        max_connections=max(limit or 0, 100) + 8,
        **options,
    )
    cluster._node_options = options
    return cluster


def durability_of(redis: Any) -> Durability:
    """The durability a client was built with (``shared.connections.redis_client``); a client
    built another way (tests, tools) does not wait."""
    found = getattr(redis, "durability", None)
    return found if isinstance(found, Durability) else Durability()


def is_cluster(redis: Any) -> bool:
    return isinstance(redis, RedisCluster)


async def server_ids(redis: Any) -> frozenset[str] | None:
    """The run ids of the servers that hold the data: the master, or every primary of a
    cluster. A run id not seen before is a server that restarted or was promoted, and it may
    lack the last writes the one before it acknowledged.

    None when the connection reached a replica: a master Sentinel has since demoted, which
    reads still reach until a write fails. The pool's connections are dropped then, so the
    next call asks the Sentinels for the master again.
    """
    if is_cluster(redis):
        found = await redis.info("server", target_nodes=RedisCluster.PRIMARIES)
        return frozenset(str(info.get("run_id", "")) for info in found.values())
    info = await redis.info("server", "replication")
    if info.get("role") == "slave" and isinstance(redis.connection_pool, SentinelConnectionPool):
        await redis.connection_pool.disconnect()
        return None
    return frozenset({str(info.get("run_id", ""))})


Queue = Callable[[Pipeline, int], Awaitable[None]]


async def pinned(
    redis: Any, keys: Sequence[str], queue: Queue, durability: Durability
) -> list[Any]:
    """Send call ``i`` (queued by ``queue(pipe, i)``) for every ``keys[i]``, each to the server
    holding that key, in order per server, on one connection per server (a pipeline, not a
    transaction); the replies in call order, errors in place.

    With ``durability`` on, every pipeline ends with ``WAIT``, which on that connection counts
    exactly the writes of the calls before it; too few replicas raise ``NotReplicated``.

    In a cluster a call that met a moving slot did not run (MOVED, ASK, TRYAGAIN,
    CLUSTERDOWN); such calls are sent again, in order, once the slot map is fresh, up to
    ``REDIRECT_ROUNDS`` times. A migration fails every script of the slot from the moment it
    starts (each script's keys include one the migration has moved or that does not exist),
    so what is sent again is the tail of each event's calls and each event's order holds.
    """
    if not keys:
        return []
    if is_cluster(redis):
        await redis.initialize()  # a no-op unless a failed node asked for a fresh slot map
    replies: list[Any] = [None] * len(keys)
    todo = list(range(len(keys)))
    for _ in range(REDIRECT_ROUNDS):
        batches = [[todo[j] for j in group] for group in _groups(redis, [keys[i] for i in todo])]
        answers = await asyncio.gather(
            *(_send(redis, keys[batch[0]], batch, queue, durability) for batch in batches)
        )
        todo, moved = [], False
        for batch, got in zip(batches, answers, strict=True):
            for i, reply in zip(batch, got, strict=True):
                replies[i] = reply
                if isinstance(reply, _REDIRECTS) and is_cluster(redis):
                    todo.append(i)
                    moved = moved or not isinstance(reply, TryAgainError)
        if not todo:
            break
        todo.sort()
        if moved:
            await redis.refresh_slots()
        await asyncio.sleep(REDIRECT_PAUSE_SECONDS)
    return replies


async def _send(
    redis: Any, key: str, batch: list[int], queue: Queue, durability: Durability
) -> list[Any]:
    cluster = is_cluster(redis)
    client = redis.node_client(key) if cluster else redis
    try:
        async with client.pipeline(transaction=False) as pipe:
            for i in batch:
                await queue(pipe, i)
            if durability.on:
                pipe.execute_command("WAIT", durability.replicas, durability.timeout_ms)
            got = list(await pipe.execute(raise_on_error=False))
    except (RedisConnectionError, RedisTimeoutError):
        if cluster:
            redis.node_failed(key)
        raise
    if durability.on:
        check_replicated(got.pop(), durability)
    return got


def check_replicated(acknowledged: Any, durability: Durability) -> None:
    """Raise ``NotReplicated`` when ``WAIT`` answered with fewer replicas than required."""
    if isinstance(acknowledged, Exception):
        raise acknowledged
    if int(acknowledged) < durability.replicas:
        raise NotReplicated(
            f"NOREPLICAS {int(acknowledged)} of {durability.replicas} replicas acknowledged "
            f"the write within {durability.timeout_ms} ms"
        )


def _groups(redis: Any, keys: Sequence[str]) -> list[list[int]]:
    """Indexes of ``keys`` grouped by the node serving them (one group when not a cluster),
    each group in the original order."""
    if not is_cluster(redis):
        return [list(range(len(keys)))]
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        node = redis.get_node_from_key(key)
        groups.setdefault(node.name if node is not None else "", []).append(i)
    return list(groups.values())
