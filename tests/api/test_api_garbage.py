"""Bytes that are not a request, sent straight to every method of a running API.

The client here uses grpc's raw channel methods without serializers, so the bytes reach the
server exactly as given, as a broken or hostile client would send them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import grpc
import pytest
from api_support import ApiProcess, scrape
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.proto import waitroom_pb2 as pb
from shared.proto.waitroom_pb2_grpc import WaitroomServiceStub

SERVICE = "/waitroom.v1.WaitroomService/"
UNARY = [
    SERVICE + "JoinQueue",
    SERVICE + "GetQueueStatus",
    SERVICE + "LeaveQueue",
    SERVICE + "HealthCheck",
    "/grpc.health.v1.Health/Check",
]
SERVER_STREAMS = [SERVICE + "StreamQueuePosition", "/grpc.health.v1.Health/Watch"]
BIDI_STREAMS = ["/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"]
METHODS = UNARY + SERVER_STREAMS + BIDI_STREAMS

# Not a protobuf message of any type: field 31, wire type 7, which does not exist.
GARBAGE = b"\xff\xff\xff\xff"

# A stream whose request happened to decode may stay open; the deadline ends it (an answer
# that counts, not a failure). Valid requests get whatever their content deserves.
STREAM_DEADLINE = 0.5
SERVER_FAULTS = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNIMPLEMENTED}


@pytest.fixture(scope="module")
def raw_channel(api_process: ApiProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(api_process.address) as channel:
        yield channel


def send(channel: grpc.Channel, method: str, payload: bytes) -> tuple[grpc.StatusCode, str]:
    """Send ``payload`` as the request of ``method``; the status the call ended with."""
    try:
        if method in UNARY:
            channel.unary_unary(method)(payload, timeout=10)
        elif method in SERVER_STREAMS:
            for _ in channel.unary_stream(method)(payload, timeout=STREAM_DEADLINE):
                pass
        else:
            for _ in channel.stream_stream(method)(iter([payload]), timeout=STREAM_DEADLINE):
                pass
    except grpc.RpcError as exc:
        return exc.code(), exc.details()  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, ""


def invalid_count(metrics_text: str, method: str) -> float:
    pattern = (
        r'^waitroom_rpc_duration_seconds_count\{code="INVALID_ARGUMENT",'
        rf'method="{re.escape(method)}"\}} (\S+)$'
    )
    found = re.search(pattern, metrics_text, flags=re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize("method", METHODS)
def test_garbage_is_invalid_argument_logged_once_and_timed(
    api_process: ApiProcess, raw_channel: grpc.Channel, method: str
) -> None:
    timed = method not in BIDI_STREAMS  # reflection is not timed: it lives as long as its client
    before = invalid_count(scrape(api_process), method)
    log_before = api_process.log()

    code, details = send(raw_channel, method, GARBAGE)

    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert details == f"WTR007 - the request is not a valid {method} message"
    # The server records a call once it has sent the status, so the client may see the status
    # first: wait (bounded) for the count rather than race it.
    expected = before + (1 if timed else 0)
    deadline = time.monotonic() + 10
    while invalid_count(scrape(api_process), method) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert invalid_count(scrape(api_process), method) == expected
    logged = api_process.log()[len(log_before) :]
    assert "Traceback" not in logged
    lines = [line for line in logged.splitlines() if method in line]
    assert len(lines) == 1 and "WARNING" in lines[0] and "undecodable" in lines[0], logged


@pytest.mark.parametrize("method", METHODS)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(payload=st.binary(max_size=256))
def test_arbitrary_bytes_never_fault_the_server(
    raw_channel: grpc.Channel, method: str, payload: bytes
) -> None:
    code, details = send(raw_channel, method, payload)
    assert code not in SERVER_FAULTS, (code, details)


def test_the_server_answers_after_garbage_and_logged_no_traceback(
    api_process: ApiProcess, raw_channel: grpc.Channel, redis_url: str
) -> None:
    for method in METHODS:
        send(raw_channel, method, GARBAGE)
    reply = WaitroomServiceStub(raw_channel).HealthCheck(pb.HealthCheckRequest(), timeout=10)
    assert reply.status == "SERVING"
    metrics_text = scrape(api_process)
    assert 'code="UNKNOWN"' not in metrics_text and 'code="INTERNAL"' not in metrics_text
    assert "Traceback" not in api_process.log()
