"""Sentinel as a ticket company secures it: the master and replicas ask for an ACL user and
password (the default user off), the Sentinels ask for their own password, and, in the TLS
variant, Sentinels and servers speak only TLS with client certificates (``tls-port`` in
sentinel.conf works in Debian's Redis 7.0 build). The master is killed with kill -9 mid-sale;
Sentinel promotes the replica and every process follows. Wrong passwords are refused at start
in one line naming the setting. In the ACL variant the Sentinels ask for their own ACL user
(``WAITROOM_REDIS_SENTINEL_USERNAME``) with their default user off: a process reaches the
master only by sending that name, and a wrong or missing name is refused at start."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from infra_support import (
    SECRET,
    Sale,
    create_events,
    process_env,
    refused_at_start,
    sale_survives_a_failover,
    unique_tag,
    waitroom_command,
)

from waitroom_dev.redis_infra import Access, Certificates, SentinelGroup, cli, sentinel_group

USER, PASSWORD = "waitroom-sentinel", "master-password-81d2"
SENTINEL_PASSWORD = "sentinel-password-3b7e"
SENTINEL_USER = "waitroom-watcher"


@pytest.fixture(scope="module")
def acl_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    workdir = tmp_path_factory.mktemp("sentinel-acl")
    access = Access(user=USER, password=PASSWORD)
    with sentinel_group(workdir, access=access, sentinel_password=SENTINEL_PASSWORD) as group:
        yield group


@pytest.fixture(scope="module")
def sentinel_acl_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """Sentinels with their own ACL user (``user default off`` in sentinel.conf)."""
    workdir = tmp_path_factory.mktemp("sentinel-user")
    access = Access(user=USER, password=PASSWORD)
    with sentinel_group(
        workdir, access=access, sentinel_user=SENTINEL_USER, sentinel_password=SENTINEL_PASSWORD
    ) as group:
        yield group


@pytest.fixture(scope="module")
def tls_group(
    tmp_path_factory: pytest.TempPathFactory, certs: Certificates
) -> Iterator[SentinelGroup]:
    workdir = tmp_path_factory.mktemp("sentinel-tls")
    access = Access(certs, USER, PASSWORD)
    with sentinel_group(workdir, access=access, sentinel_password=SENTINEL_PASSWORD) as group:
        yield group


def command_env(group: SentinelGroup, **changes: str) -> dict[str, str]:
    return {**os.environ, **group.env(), "WAITROOM_JWT_SECRET": SECRET, **changes}


@pytest.mark.parametrize(
    ("wrong", "named"),
    [
        ("WAITROOM_REDIS_SENTINEL_PASSWORD", "WAITROOM_REDIS_SENTINEL_PASSWORD"),
        ("WAITROOM_REDIS_PASSWORD", "WAITROOM_REDIS_PASSWORD"),
    ],
)
def test_a_wrong_password_is_refused_at_start(
    acl_group: SentinelGroup, wrong: str, named: str
) -> None:
    line = refused_at_start(command_env(acl_group, **{wrong: "not-the-password"}), "admitter")
    assert f"{named} (or _FILE)" in line, line
    assert "not-the-password" not in line


@pytest.mark.parametrize("missing", ["WAITROOM_REDIS_SENTINEL_PASSWORD", "WAITROOM_REDIS_PASSWORD"])
def test_a_missing_password_is_refused_at_start(acl_group: SentinelGroup, missing: str) -> None:
    env = command_env(acl_group)
    del env[missing]
    assert f"{missing} (or _FILE)" in refused_at_start(env, "api")


def test_an_operator_command_finds_the_master_over_tls(tls_group: SentinelGroup) -> None:
    env = command_env(tls_group)
    event = f"ev-{unique_tag()}"
    created = waitroom_command(env, "event", "create", event)
    assert created.returncode == 0, created.stderr
    assert event in tls_group.cli(tls_group.master().port, "smembers", "wr:events")
    assert PASSWORD not in created.stdout + created.stderr
    assert SENTINEL_PASSWORD not in created.stdout + created.stderr


def test_a_sale_goes_on_when_the_master_is_killed(
    tls_group: SentinelGroup, bootstrap: str, workdir: Path
) -> None:
    # TLS, the ACL user and the Sentinels' password at once: one failover covers all three
    # (each takes ~15 s here; the refusals above cover the plain variant's settings).
    group = tls_group
    event = f"ev-{unique_tag()}"
    env = process_env(group.env(), bootstrap, unique_tag())
    create_events(env, [event], max_concurrent=3, rate=200.0)
    sale = Sale(env, workdir, [event]).start()

    def failover() -> str:
        killed = group.kill_master().port
        promoted = group.wait_for_promotion(killed)
        return f"Sentinel over TLS: master {killed} killed, {promoted} promoted"

    sale_survives_a_failover(sale, failover)


def test_the_processes_reach_the_master_as_the_sentinels_acl_user(
    sentinel_acl_group: SentinelGroup, bootstrap: str, workdir: Path
) -> None:
    group = sentinel_acl_group
    # The Sentinels' default user is off: without the user name, even with the right
    # password, a Sentinel answers nothing.
    sentinel = str(group.sentinels[0].port)
    no_user = ["--no-auth-warning", "--pass", SENTINEL_PASSWORD]
    assert "NOAUTH" in cli("-p", sentinel, *no_user, "sentinel", "masters")
    assert group.master_port_seen() == str(group.servers[0].port)  # as the user, it does
    env = process_env(group.env(), bootstrap, unique_tag())
    event = f"ev-{unique_tag()}"
    created = waitroom_command(env, "event", "create", event)
    assert created.returncode == 0, created.stderr
    assert event in group.cli(group.master().port, "smembers", "wr:events")
    # A process passes its start-up check through the Sentinels and works the event.
    sale = Sale(env, workdir, [event]).start(api=False, consumer=False)
    try:
        (admitter,) = sale.processes
        sale.wait_until(lambda: f"took event {event}" in admitter.log(), "the admitter working")
    finally:
        codes = sale.stop()
    assert codes == {"admitter": 0}, sale.logs()
    assert SENTINEL_PASSWORD not in created.stdout + created.stderr + admitter.log()


@pytest.mark.parametrize("user", ["not-the-user", None])
def test_a_wrong_or_missing_sentinel_user_is_refused_at_start(
    sentinel_acl_group: SentinelGroup, user: str | None
) -> None:
    env = command_env(sentinel_acl_group)
    if user is None:
        del env["WAITROOM_REDIS_SENTINEL_USERNAME"]
    else:
        env["WAITROOM_REDIS_SENTINEL_USERNAME"] = user
    for process in ("api", "admitter", "consumer"):
        line = refused_at_start(env, process)
        assert "WAITROOM_REDIS_SENTINEL_USERNAME" in line, line
        assert SENTINEL_PASSWORD not in line and PASSWORD not in line
