"""A Redis Cluster as a ticket company secures it: TLS only (client certificates required, the
cluster bus and replication over TLS too), an ACL user with the default user off, and a
replica per master. An operator command and a whole sale work through it; a shard's master
killed with kill -9 mid-sale is replaced by its replica and every process follows; a wrong
password is refused at start."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from infra_support import (
    SECRET,
    Sale,
    create_events,
    events_on_every_shard,
    overlap,
    process_env,
    refused_at_start,
    sale_survives_a_failover,
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


def test_a_sale_goes_on_when_a_shard_master_is_killed(
    secured_cluster: Cluster, bootstrap: str, workdir: Path
) -> None:
    cluster = secured_cluster
    events = events_on_every_shard(lambda e: cluster.slot_owner(slot_of(e)), 3)
    tag = unique_tag()
    env = process_env(cluster.env(), bootstrap, tag)
    create_events(env, events, max_concurrent=CAP, rate=200.0)
    sale = Sale(env, workdir, events).start()
    # The shard of the node WAITROOM_REDIS_URL names: clients built after the kill (the
    # test's own reads) must find the cluster through WAITROOM_REDIS_CLUSTER_NODES.
    # It failed in 2 runs of 3 before pinned calls read the slot map again after a dead node:
    # the consumer's outcomes went only to the killed master, so no slot was ever freed
    # (tests/infra/test_cluster_failover.py shows that alone).
    old = cluster.ports[0]
    doomed = next(slot_of(e) for e in events if cluster.slot_owner(slot_of(e)) == old)

    def failover() -> str:
        cluster.kill(old)
        promoted = cluster.wait_for_failover(doomed, old)
        return f"cluster over TLS: master {old} killed, replica {promoted} took its slots"

    records = sale_survives_a_failover(sale, failover)
    for event in events:
        mine = [records[j.session_id] for j in sale.joined if j.event == event]
        assert overlap([r for r in mine if r is not None]) <= CAP, f"{event}: over the cap"
