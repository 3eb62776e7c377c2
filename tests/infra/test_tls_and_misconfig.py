"""TLS with a client certificate and an ACL user whose password comes from a file; and the
misconfigurations every process refuses at start, in one line naming the setting, exit 2.

A Redis that is merely down is not a misconfiguration: the process starts and retries.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from infra_support import waitroom_command

from waitroom_dev.redis_infra import Certificates, sentinel_group, tls_redis_service
from waitroom_dev.services import Service, free_port, redis_service

USER, PASSWORD = "waitroom", "correct-horse-battery-staple"
SECRET = "infra-tests-secret-0123456789abcdef-0123"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory, certs: Certificates) -> Iterator[Service]:
    server = tls_redis_service(tmp_path_factory.mktemp("tls"), certs, user=USER, password=PASSWORD)
    yield server.start()
    server.stop()


@pytest.fixture
def tls_env(tls_redis: Service, certs: Certificates, tmp_path: Path) -> dict[str, str]:
    password_file = tmp_path / "redis-password"
    password_file.write_text(PASSWORD + "\n")
    return {
        **os.environ,
        "WAITROOM_JWT_SECRET": SECRET,
        "WAITROOM_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "WAITROOM_REDIS_URL": f"rediss://127.0.0.1:{tls_redis.port}/0",
        "WAITROOM_REDIS_USERNAME": USER,
        "WAITROOM_REDIS_PASSWORD_FILE": str(password_file),
        "WAITROOM_REDIS_TLS_CA_FILE": str(certs.ca),
        "WAITROOM_REDIS_TLS_CERT_FILE": str(certs.client_cert),
        "WAITROOM_REDIS_TLS_KEY_FILE": str(certs.client_key),
    }


PROCESSES = ["api", "admitter", "consumer"]


def refused(env: dict[str, str], process: str) -> str:
    """Start ``process``; it must exit 2 at once with one line on stderr. Returns the line."""
    result = waitroom_command(env, process, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_commands_work_over_tls_with_an_acl_user_and_a_password_file(
    tls_env: dict[str, str],
) -> None:
    created = waitroom_command(tls_env, "event", "create", "tls-event", "--json")
    assert created.returncode == 0, created.stderr
    listed = waitroom_command(tls_env, "event", "list", "--json")
    assert listed.returncode == 0 and "tls-event" in listed.stdout, listed.stderr
    assert PASSWORD not in created.stdout + created.stderr + listed.stdout + listed.stderr


@pytest.mark.parametrize("process", PROCESSES)
def test_a_wrong_password_stops_the_process_naming_the_setting(
    tls_env: dict[str, str], process: str
) -> None:
    env = {**tls_env, "WAITROOM_REDIS_PASSWORD": "not-the-password"}
    del env["WAITROOM_REDIS_PASSWORD_FILE"]
    line = refused(env, process)
    assert "WAITROOM_REDIS_PASSWORD" in line
    assert "not-the-password" not in line


def test_a_server_certificate_from_another_ca_stops_the_process(
    tls_env: dict[str, str], other_certs: Certificates
) -> None:
    line = refused({**tls_env, "WAITROOM_REDIS_TLS_CA_FILE": str(other_certs.ca)}, "admitter")
    assert "WAITROOM_REDIS_TLS_CA_FILE" in line


def test_a_client_certificate_the_server_does_not_trust_stops_the_process(
    tls_env: dict[str, str], other_certs: Certificates
) -> None:
    env = {
        **tls_env,
        "WAITROOM_REDIS_TLS_CERT_FILE": str(other_certs.client_cert),
        "WAITROOM_REDIS_TLS_KEY_FILE": str(other_certs.client_key),
    }
    assert "WAITROOM_REDIS_TLS_CERT_FILE" in refused(env, "consumer")


@pytest.fixture(scope="module")
def plain_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    server = redis_service(tmp_path_factory.mktemp("plain")).start()
    yield server
    server.stop()


def base_env(url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "WAITROOM_JWT_SECRET": SECRET,
        "WAITROOM_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "WAITROOM_REDIS_URL": url,
        **extra,
    }


@pytest.mark.parametrize("process", PROCESSES)
def test_cluster_mode_against_a_single_server_stops_the_process(
    plain_redis: Service, process: str
) -> None:
    env = base_env(f"redis://127.0.0.1:{plain_redis.port}/0", WAITROOM_REDIS_MODE="cluster")
    assert "WAITROOM_REDIS_MODE" in refused(env, process)


def test_an_unknown_master_name_stops_the_process(tmp_path: Path) -> None:
    with sentinel_group(tmp_path) as group:
        env = base_env(
            "redis://sentinel-managed/0",
            WAITROOM_REDIS_MODE="sentinel",
            WAITROOM_REDIS_SENTINELS=group.sentinel_addresses,
            WAITROOM_REDIS_MASTER_NAME="no-such-master",
        )
        assert "WAITROOM_REDIS_MASTER_NAME" in refused(env, "api")


def test_a_redis_that_is_down_at_start_is_waited_for_not_refused(tmp_path: Path) -> None:
    env = base_env(f"redis://127.0.0.1:{free_port()}/0")
    log = tmp_path / "admitter.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "waitroom_admitter"], env=env, stdout=out, stderr=out
        )
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(5)  # still running: retrying, not refused
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "not reachable yet" in log.read_text()
