"""The API over TLS and mutual TLS, as a real server process: the contract, health and
reflection work through TLS, callers without a good certificate are refused, the plaintext
health port serves probes and nothing else, and bad files stop the API at start."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tls_support import Pair, make_ca, make_cert

from shared.cli import RET_OK, RET_SETTINGS
from shared.proto import waitroom_pb2, waitroom_pb2_grpc
from tests.api.api_support import ApiProcess, api_env, launch, make_event
from waitroom_dev.services import free_port, wait_for_port

API = [sys.executable, "-m", "waitroom_api"]


@dataclass(frozen=True)
class Pki:
    ca: Pair
    server: Pair
    gateway: Pair
    stranger: Pair  # signed by another CA
    directory: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("api-pki")
    ca = make_ca(directory, "api-ca")
    other = make_ca(directory, "other-ca")
    return Pki(
        ca=ca,
        server=make_cert(directory, "waitroom-api", ca),
        gateway=make_cert(directory, "gateway", ca),
        stranger=make_cert(directory, "stranger", other),
        directory=directory,
    )


def tls_env(redis_url: str, pki: Pki, *, mutual: bool = False, **extra: str) -> dict[str, str]:
    env = api_env(
        redis_url,
        "",
        WAITROOM_API_TLS_CERTFILE=str(pki.server.cert),
        WAITROOM_API_TLS_KEYFILE=str(pki.server.key),
        **extra,
    )
    if mutual:
        env["WAITROOM_API_TLS_CLIENT_CAFILE"] = str(pki.ca.cert)
    return env


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], ApiProcess]]:
    started: list[ApiProcess] = []

    def run(env: dict[str, str]) -> ApiProcess:
        api = launch(env, tmp_path / f"api-{len(started)}.log")
        started.append(api)
        return api

    yield run
    for api in started:
        code = api.stop()
        assert code == RET_OK, f"the API exited with {code}:\n{api.log()}"


def secure(address: str, pki: Pki, client: Pair | None = None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.cert.read_bytes(),
        private_key=client.key.read_bytes() if client else None,
        certificate_chain=client.cert.read_bytes() if client else None,
    )
    return grpc.secure_channel(address, credentials)


def health_status(channel: grpc.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    return int(answer.status)


def contract_health(channel: grpc.Channel) -> waitroom_pb2.HealthCheckResponse:
    stub = waitroom_pb2_grpc.WaitroomServiceStub(channel)
    return stub.HealthCheck(waitroom_pb2.HealthCheckRequest(), timeout=10)


def refused(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    code: grpc.StatusCode = info.value.code()  # type: ignore[attr-defined]
    return code


def test_tls_serves_the_contract_health_and_reflection(
    redis_url: str, pki: Pki, start: Callable[[dict[str, str]], ApiProcess], event_id: str
) -> None:
    health_port = free_port()
    api = start(tls_env(redis_url, pki, WAITROOM_API_HEALTH_ADDR=f"127.0.0.1:{health_port}"))
    make_event(redis_url, event_id)
    with secure(api.address, pki) as channel:
        stub = waitroom_pb2_grpc.WaitroomServiceStub(channel)
        joined = stub.JoinQueue(
            waitroom_pb2.JoinQueueRequest(user_id="u1", event_id=event_id), timeout=10
        )
        assert joined.session_id and joined.position == 1
        assert contract_health(channel).status == "SERVING"
        assert health_status(channel, "waitroom.v1.WaitroomService") == 1  # SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (answer,) = reflection.ServerReflectionInfo(iter([request]), timeout=10)
        names = {s.name for s in answer.list_services_response.service}
        assert {"waitroom.v1.WaitroomService", "grpc.health.v1.Health"} <= names

    # The TLS port takes no plaintext caller.
    with grpc.insecure_channel(api.address) as plain:
        assert refused(lambda: contract_health(plain)) == grpc.StatusCode.UNAVAILABLE

    # The probe port is plaintext and serves the health service, and nothing else.
    with grpc.insecure_channel(f"127.0.0.1:{health_port}") as probe:
        assert health_status(probe) == 1
        assert refused(lambda: contract_health(probe)) == grpc.StatusCode.UNIMPLEMENTED
    assert f"grpc.health.v1 alone, plaintext, on 127.0.0.1:{health_port}" in api.log()


def test_mutual_tls_refuses_callers_without_a_certificate_from_the_client_ca(
    redis_url: str, pki: Pki, start: Callable[[dict[str, str]], ApiProcess]
) -> None:
    api = start(tls_env(redis_url, pki, mutual=True))
    with secure(api.address, pki, pki.gateway) as channel:
        assert contract_health(channel).status == "SERVING"
        assert health_status(channel) == 1
    for client in (None, pki.stranger):
        with secure(api.address, pki, client) as channel:
            assert refused(lambda ch=channel: contract_health(ch)) == grpc.StatusCode.UNAVAILABLE
    assert "client certificates required" in api.log()


def test_draining_shows_on_the_health_port_and_the_api_exits_0(
    redis_url: str, pki: Pki, tmp_path: Path, event_id: str
) -> None:
    health_port = free_port()
    env = tls_env(
        redis_url,
        pki,
        mutual=True,
        WAITROOM_API_HEALTH_ADDR=f"127.0.0.1:{health_port}",
        WAITROOM_API_GRACE_SECONDS="3",
    )
    api = launch(env, tmp_path / "api.log")
    make_event(redis_url, event_id)
    try:
        with (
            secure(api.address, pki, pki.gateway) as channel,
            grpc.insecure_channel(f"127.0.0.1:{health_port}") as probe,
        ):
            stub = waitroom_pb2_grpc.WaitroomServiceStub(channel)
            joined = stub.JoinQueue(
                waitroom_pb2.JoinQueueRequest(user_id="u1", event_id=event_id), timeout=10
            )
            # An open position stream never ends by itself: the drain lasts the grace period.
            stream = stub.StreamQueuePosition(
                waitroom_pb2.StreamPositionRequest(session_id=joined.session_id), timeout=60
            )
            assert next(stream).session_id == joined.session_id
            assert health_status(probe) == 1
            api.proc.send_signal(signal.SIGTERM)
            seen = []
            while not seen or seen[-1] == 1:
                seen.append(health_status(probe))
            assert seen[-1] == 2, seen  # NOT_SERVING while draining
            code = api.proc.wait(30)
    finally:
        api.stop()
    assert code == RET_OK, api.log()


def test_processes_share_the_tls_and_health_ports_with_reuse_port(
    redis_url: str, pki: Pki, start: Callable[[dict[str, str]], ApiProcess]
) -> None:
    health = f"127.0.0.1:{free_port()}"
    first = start(tls_env(redis_url, pki, WAITROOM_API_HEALTH_ADDR=health))
    env = {
        **tls_env(redis_url, pki, WAITROOM_API_HEALTH_ADDR=health),
        "WAITROOM_API_ADDR": first.address,
    }
    second = subprocess.Popen(API, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert second.stdout is not None
        line = second.stdout.readline().decode()
        assert f"listening on {first.address} (TLS;" in line, line
        with secure(first.address, pki) as channel, grpc.insecure_channel(health) as probe:
            assert contract_health(channel).status == "SERVING"
            assert health_status(probe) == 1
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            code = second.wait(15)
        except subprocess.TimeoutExpired:
            second.kill()
            code = second.wait()
    assert code == RET_OK


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"WAITROOM_API_TLS_KEYFILE": "<gateway key>"}, "WAITROOM_API_TLS_KEYFILE="),
        ({"WAITROOM_API_TLS_CERTFILE": "/nonexistent.crt"}, "WAITROOM_API_TLS_CERTFILE="),
        ({"WAITROOM_API_TLS_CERTFILE": "<server key>"}, "WAITROOM_API_TLS_CERTFILE="),
        ({"WAITROOM_API_TLS_CLIENT_CAFILE": "<server key>"}, "WAITROOM_API_TLS_CLIENT_CAFILE="),
        ({"WAITROOM_API_TLS_KEYFILE": ""}, "WAITROOM_API_TLS_CERTFILE is set without"),
    ],
)
def test_a_bad_certificate_setting_stops_the_api_in_one_line(
    redis_url: str, pki: Pki, change: dict[str, str], named: str
) -> None:
    files = {"<gateway key>": pki.gateway.key, "<server key>": pki.server.key}
    env = tls_env(redis_url, pki, WAITROOM_API_ADDR=f"127.0.0.1:{free_port()}")
    env.update({k: str(files.get(v, v)) for k, v in change.items()})
    result = subprocess.run(API, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == RET_SETTINGS, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and named in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_the_health_port_needs_no_tls_and_works_without_it(
    redis_url: str, start: Callable[[dict[str, str]], ApiProcess]
) -> None:
    health_port = free_port()
    api = start(api_env(redis_url, "", WAITROOM_API_HEALTH_ADDR=f"0.0.0.0:{health_port}"))
    wait_for_port(health_port, 10)
    with grpc.insecure_channel(f"127.0.0.1:{health_port}") as probe:
        assert health_status(probe) == 1
    with grpc.insecure_channel(api.address) as channel:
        assert contract_health(channel).status == "SERVING"
