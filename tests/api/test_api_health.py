"""Health, reflection and metrics of the real server, and how it behaves when Redis is gone."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import grpc
from api_support import ApiProcess, api_env, make_event, rpc_error, status_of
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from shared.proto import waitroom_pb2 as pb
from shared.proto.waitroom_pb2_grpc import WaitroomServiceStub
from waitroom_dev.services import LocalServices, free_port, redis_service


def test_health_check_reports_the_components(stub: WaitroomServiceStub) -> None:
    answer = stub.HealthCheck(pb.HealthCheckRequest())
    assert (answer.status, answer.service) == ("SERVING", "waitroom")
    assert answer.version == version("ticketbottle-waitroom")
    assert answer.kafka_enabled
    assert dict(answer.components) == {"redis": "ok", "kafka": "ok", "recovery": "ok"}


def test_standard_health_service_is_serving(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "waitroom.v1.WaitroomService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_describes_the_services_without_a_proto_file(channel: grpc.Channel) -> None:
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    assert {"waitroom.v1.WaitroomService", "grpc.health.v1.Health"} <= services
    described = DescriptorPool(database).FindServiceByName("waitroom.v1.WaitroomService")
    assert sorted(m.name for m in described.methods) == [
        "GetQueueStatus",
        "HealthCheck",
        "JoinQueue",
        "LeaveQueue",
        "StreamQueuePosition",
    ]


def _metrics(api: ApiProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{api.metrics_port}/metrics", timeout=5) as r:
        return r.read().decode()  # type: ignore[no-any-return]


def _sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_rpc_durations_are_recorded_by_method_and_code(
    api_process: ApiProcess, stub: WaitroomServiceStub, redis_url: str
) -> None:
    make_event(redis_url, "metrics1")
    join_method = "/waitroom.v1.WaitroomService/JoinQueue"
    status_method = "/waitroom.v1.WaitroomService/GetQueueStatus"
    count = "waitroom_rpc_duration_seconds_count"
    before = _metrics(api_process)
    stub.JoinQueue(pb.JoinQueueRequest(user_id="u1", event_id="metrics1"))
    stub.JoinQueue(pb.JoinQueueRequest(user_id="u1", event_id="metrics1"))  # no new session
    rpc_error(lambda: stub.GetQueueStatus(pb.GetQueueStatusRequest(session_id="nope")))
    after = _metrics(api_process)

    def grew(name: str, **labels: str) -> float:
        return _sample(after, name, **labels) - _sample(before, name, **labels)

    assert grew(count, method=join_method, code="OK") == 2
    assert grew(count, method=status_method, code="NOT_FOUND") == 1
    assert grew("waitroom_joins_total", event="metrics1") == 1


def test_without_redis_calls_are_unavailable_and_health_says_why(
    services: LocalServices, start_api: Callable[..., ApiProcess]
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    api = start_api(api_env(dead, "", WAITROOM_API_REDIS_CONNECTIONS="4"))
    with grpc.insecure_channel(api.address) as channel:
        stub = WaitroomServiceStub(channel)
        join = pb.JoinQueueRequest(user_id="u1", event_id="concert1")
        code, details = status_of(rpc_error(lambda: stub.JoinQueue(join)))
        assert code is grpc.StatusCode.UNAVAILABLE
        assert "Redis" in details and "unreachable" in details
        session = "A" * 22 + ".1.Y29uY2VydDE"
        stream = stub.StreamQueuePosition(pb.StreamPositionRequest(session_id=session))
        assert rpc_error(lambda: next(stream)).code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]

        answer = stub.HealthCheck(pb.HealthCheckRequest())
        assert answer.status == "NOT_SERVING"
        assert not answer.kafka_enabled
        assert answer.components["kafka"] == "disabled"
        assert answer.components["redis"].startswith("error: ")
        # The process itself is up and takes calls: it recovers when Redis comes back.
        check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert check.status == health_pb2.HealthCheckResponse.SERVING
    assert api.proc.poll() is None


def test_unreachable_kafka_is_reported_not_fatal(
    redis_url: str, start_api: Callable[..., ApiProcess]
) -> None:
    api = start_api(api_env(redis_url, f"127.0.0.1:{free_port()}"))
    with grpc.insecure_channel(api.address) as channel:
        answer = WaitroomServiceStub(channel).HealthCheck(pb.HealthCheckRequest())
    assert answer.status == "SERVING"
    assert answer.kafka_enabled
    assert answer.components["kafka"].startswith("unreachable: 127.0.0.1:")


def test_streams_survive_a_redis_restart(
    tmp_path: Path, services: LocalServices, start_api: Callable[..., ApiProcess]
) -> None:
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    store = redis_service(redis_dir, durable=True).start()
    url = f"redis://127.0.0.1:{store.port}/0"
    try:
        make_event(url, "concert1")
        api = start_api(api_env(url, ""))
        with grpc.insecure_channel(api.address) as channel:
            stub = WaitroomServiceStub(channel)
            first, second = (
                stub.JoinQueue(pb.JoinQueueRequest(user_id=u, event_id="concert1")).session_id
                for u in ("user1", "user2")
            )
            updates = stub.StreamQueuePosition(
                pb.StreamPositionRequest(session_id=second), timeout=60
            )
            assert next(updates).position == 2

            store.stop()  # SIGTERM: Redis writes its append-only file and exits
            time.sleep(1.5)  # several failed re-reads and pub/sub reconnects
            store = redis_service(redis_dir, store.port, durable=True).start()

            # As a gateway does: UNAVAILABLE is retried. The first call on a connection pooled
            # before the restart fails once (nothing retries a command inside the client), and
            # whether one comes before the watcher's calls have dropped them is a race.
            deadline = time.monotonic() + 10
            while True:
                try:
                    stub.LeaveQueue(pb.LeaveQueueRequest(session_id=first), wait_for_ready=True)
                    break
                except grpc.RpcError as exc:
                    late = time.monotonic() > deadline
                    if exc.code() is not grpc.StatusCode.UNAVAILABLE or late:  # type: ignore[attr-defined]
                        raise
                    time.sleep(0.1)
            moved = next(updates)
            assert (moved.status, moved.position) == (pb.SESSION_STATUS_QUEUED, 1)
            updates.cancel()  # type: ignore[attr-defined]
        log = api.log()
        # Logged once per outage, not once per failed attempt.
        assert len(re.findall(r"position stream re-reads\) unavailable", log)) == 1, log
        assert len(re.findall(r"Redis pub/sub \(position streams\) unavailable", log)) == 1, log
    finally:
        store.stop()
