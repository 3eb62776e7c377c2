"""Many locks in a Redis Cluster: each lock key is in its own event's slot, so taking and
renewing go to every master, one script call per slot, and keep the token check."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.crc import key_slot

from shared.connections import redis_client
from shared.scripts import Scripts
from shared.settings import CommonSettings
from waitroom_admitter.locks import Locks
from waitroom_dev.redis_infra import Cluster, redis_cluster

TTL_MS = 5000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir: Path = tmp_path_factory.mktemp("locks-cluster")
    with redis_cluster(workdir) as started:
        yield started


def test_many_locks_are_taken_and_renewed_on_every_master(cluster: Cluster) -> None:
    async def body() -> None:
        common = CommonSettings(redis_url=cluster.url, redis_mode="cluster")
        redis = redis_client(common)
        try:
            # The slot map is read by a client's first command; ``pinned`` routes with it and
            # does not read it (in the admitter the sweep's clock sync comes first).
            await redis.ping()
            events = [f"cl-{n}" for n in range(300)]
            locks = Locks(Scripts(redis), TTL_MS, "me")
            held = await locks.acquire_many(events)
            assert len(held) == len(events)
            assert len({key_slot(lock.key.encode()) for lock in held}) > 100  # many slots
            again = await Locks(Scripts(redis), TTL_MS, "other").acquire_many(events)
            assert again == []  # every one is held
            await redis.set(held[5].key, "other:token", px=TTL_MS)
            await redis.delete(held[200].key)
            renewed = await locks.renew_all(held)
            assert [n for n, ok in enumerate(renewed) if not ok] == [5, 200]
            assert await redis.get(held[5].key) == b"other:token"
            assert await redis.pttl(held[0].key) > TTL_MS - 1000
        finally:
            await redis.aclose()

    asyncio.run(body())
