"""/metrics of a running API: bounded by the configured events, whatever callers make up."""

from __future__ import annotations

import base64
import secrets
import urllib.error
from collections.abc import Callable
from functools import partial

import grpc
import pytest
from api_support import ApiProcess, api_env, make_event, rpc_error, scrape, status_of

from shared.proto import waitroom_pb2 as pb
from shared.proto.waitroom_pb2_grpc import WaitroomServiceStub
from waitroom_dev.services import LocalServices


def series(text: str) -> set[str]:
    """Every exported series (name and labels), without its value."""
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and line[0] != "#"}


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    code, _ = status_of(rpc_error(call))
    return code


def made_up_session(event_id: str) -> str:
    """A well-formed session id of ``event_id``, which no join ever issued."""
    nonce = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()
    suffix = base64.urlsafe_b64encode(event_id.encode()).rstrip(b"=").decode()
    return f"{nonce}.1.{suffix}"


def test_made_up_events_add_no_series(
    stub: WaitroomServiceStub, api_process: ApiProcess, redis_url: str
) -> None:
    make_event(redis_url, "concert1")
    joined = stub.JoinQueue(pb.JoinQueueRequest(user_id="u1", event_id="concert1"))
    # Every RPC once, so each method and code already has its series before counting.
    stub.GetQueueStatus(pb.GetQueueStatusRequest(session_id=joined.session_id))
    first = next(
        iter(stub.StreamQueuePosition(pb.StreamPositionRequest(session_id=joined.session_id)))
    )
    assert first.position == 1
    probe = made_up_session("made-up-probe")
    rpc_error(lambda: stub.JoinQueue(pb.JoinQueueRequest(user_id="u1", event_id="made-up-probe")))
    rpc_error(lambda: stub.GetQueueStatus(pb.GetQueueStatusRequest(session_id=probe)))
    rpc_error(lambda: stub.LeaveQueue(pb.LeaveQueueRequest(session_id=probe)))
    rpc_error(lambda: list(stub.StreamQueuePosition(pb.StreamPositionRequest(session_id=probe))))
    before = series(scrape(api_process))

    for n in range(300):
        event = f"made-up-{n}"
        session = made_up_session(event)
        join = pb.JoinQueueRequest(user_id="u1", event_id=event)
        assert code_of(partial(stub.JoinQueue, join)) is grpc.StatusCode.NOT_FOUND
        stream = stub.StreamQueuePosition(pb.StreamPositionRequest(session_id=session))
        assert code_of(partial(list, stream)) is grpc.StatusCode.NOT_FOUND
        status = pb.GetQueueStatusRequest(session_id=session)
        assert code_of(partial(stub.GetQueueStatus, status)) is grpc.StatusCode.NOT_FOUND
        leave = pb.LeaveQueueRequest(session_id=session)
        assert code_of(partial(stub.LeaveQueue, leave)) is grpc.StatusCode.NOT_FOUND

    after = series(scrape(api_process))
    assert sorted(after - before) == []
    assert not any("made-up" in line for line in after)


def test_metrics_listen_only_on_the_address_set(
    services: LocalServices, redis_url: str, start_api: Callable[..., ApiProcess]
) -> None:
    # Every 127.x.y.z is this host on Linux: listening on 127.0.0.2 alone shows the setting is
    # used, as 127.0.0.1 (which 0.0.0.0 would cover) then refuses the connection.
    env = api_env(services.redis_url, services.bootstrap, WAITROOM_METRICS_ADDR="127.0.0.2")
    api = start_api(env)
    assert "waitroom_streams_open" in scrape(api, "127.0.0.2")
    with pytest.raises(urllib.error.URLError):
        scrape(api, "127.0.0.1")
