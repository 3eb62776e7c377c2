"""A shard's master killed under a client whose only calls to that shard are ``pinned``
(pipelined scripts sent straight to the node that serves the key: the consumer's
``finish_many``, durable joins, the durable outbox read). The client must find the promoted
replica by itself; before the fix it kept sending to the dead master for good, and the sale
through a killed shard master stalled (tests/infra/test_secured_cluster.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.crc import key_slot

from shared.backoff import is_transient
from shared.connections import redis_client
from shared.redis_config import Durability
from shared.redis_modes import pinned
from shared.settings import CommonSettings, load
from waitroom_dev.redis_infra import Cluster, redis_cluster

#: Long enough for the cluster to promote the replica (node timeout 2 s) and the client to
#: follow; a client that never follows fails here rather than hanging.
PATIENCE_SECONDS = 20.0


@pytest.fixture(scope="module")
def replicated_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with redis_cluster(tmp_path_factory.mktemp("failover"), replicas=1) as cluster:
        yield cluster


def test_pinned_calls_follow_a_promoted_replica(replicated_cluster: Cluster) -> None:
    cluster = replicated_cluster
    key = "wr:{pinned-failover}:probe"
    slot = key_slot(key.encode())
    doomed = cluster.slot_owner(slot)
    env = {**cluster.env(), "WAITROOM_JWT_SECRET": "x" * 40}

    async def write(pipe: Any, _: int) -> None:
        pipe.set(key, b"before")

    async def read(pipe: Any, _: int) -> None:
        pipe.get(key)

    async def scenario() -> tuple[Any, int, float]:
        client = redis_client(load(CommonSettings, env))
        try:
            # A command through redis-py's routing first, as every process makes: the slot
            # map is read, and only pinned calls follow.
            assert await client.exists(key) in (0, 1)
            # WAIT for the replica, so the value must survive the promotion.
            await pinned(client, [key], write, Durability(replicas=1, timeout_ms=2000))
            cluster.kill(doomed)
            promoted = await asyncio.to_thread(cluster.wait_for_failover, slot, doomed)
            started = time.monotonic()
            failures = 0
            while True:
                # The caller's retry loop, as the consumer's: nothing but pinned calls.
                try:
                    (value,) = await pinned(client, [key], read, Durability())
                    return value, failures, time.monotonic() - started
                except Exception as exc:
                    assert is_transient(exc), repr(exc)
                    failures += 1
                    if time.monotonic() - started > PATIENCE_SECONDS:
                        raise AssertionError(
                            f"still failing {PATIENCE_SECONDS} s after replica {promoted} "
                            f"took over from {doomed}: {exc!r}"
                        ) from exc
                    await asyncio.sleep(0.1)
        finally:
            await client.aclose()

    value, failures, seconds = asyncio.run(scenario())
    print(f"\npinned call followed the promoted replica after {failures} failures, {seconds:.2f} s")
    assert value == b"before"
    assert failures <= 2, "one failed call must be enough to read the slot map again"
