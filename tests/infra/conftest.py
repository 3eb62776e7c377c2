"""Fixtures: Redis as a ticket company runs it (a three-master Cluster, a Sentinel-watched master
with replicas, TLS with an ACL user), started by the test on free local ports; the session's
Kafka-protocol broker from tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import hypothesis  # noqa: F401  (see below)
import pytest

# Imported at collection: Hypothesis's plugin otherwise imports it at the session's end, and
# parsing it then, while the Kafka and gRPC clients' threads still run, trips CPython 3.11.7's
# AST recursion check (gh-106905: "AST constructor recursion depth mismatch").
from waitroom_dev.redis_infra import Certificates, Cluster, make_certificates, redis_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as started:
        yield started


@pytest.fixture
def cluster_env(cluster: Cluster) -> dict[str, str]:
    """Cluster settings, over an emptied cluster."""
    from redis.cluster import RedisCluster

    client = RedisCluster.from_url(cluster.url)
    try:
        client.flushall(target_nodes=RedisCluster.PRIMARIES)
    finally:
        client.close()
    return {"WAITROOM_REDIS_URL": cluster.url, "WAITROOM_REDIS_MODE": "cluster"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """Certificates from another CA: what a wrong CA or client certificate looks like."""
    return make_certificates(tmp_path_factory.mktemp("other-certs"), name="someone-else")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
