"""A failure of our own is a bug, answered INTERNAL and logged with its traceback; only an
unreachable or recovering Redis is UNAVAILABLE (the one rule in shared/backoff.py)."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import redis
from api_support import ApiProcess, api_env, make_event, rpc_error

from shared import keys
from shared.ids import ticket_of_session
from shared.proto import waitroom_pb2 as pb
from shared.proto.waitroom_pb2_grpc import WaitroomServiceStub


def test_a_script_error_is_internal_and_logged_as_a_bug_not_an_outage(
    redis_url: str, bootstrap: str, start_api: Callable[..., ApiProcess]
) -> None:
    # A process of its own: the tracebacks this test provokes stay out of the shared API's log.
    api_process = start_api(api_env(redis_url, bootstrap))
    channel = grpc.insecure_channel(api_process.address)
    stub = WaitroomServiceStub(channel)
    make_event(redis_url, "concert1")
    joined = stub.JoinQueue(pb.JoinQueueRequest(user_id="u1", event_id="concert1"))
    # A record the status script cannot decode: its cjson call raises inside Redis.
    client = redis.Redis.from_url(redis_url)
    try:
        ticket = str(ticket_of_session(joined.session_id))
        client.hset(keys.sessions("concert1"), ticket, "{broken")
    finally:
        client.close()
    log_before = len(api_process.log())

    error = rpc_error(
        lambda: stub.GetQueueStatus(pb.GetQueueStatusRequest(session_id=joined.session_id))
    )

    assert error.code() is grpc.StatusCode.INTERNAL
    assert "internal error" in (error.details() or "")
    written = api_process.log()[log_before:]
    assert "api request failed" in written and "Traceback" in written
    assert "unavailable" not in written
    # The process goes on serving.
    again = stub.JoinQueue(pb.JoinQueueRequest(user_id="u2", event_id="concert1"))
    assert again.position == 2
    channel.close()
