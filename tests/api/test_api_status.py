"""GetQueueStatus and LeaveQueue through the real server, in every state a session can be in."""

from __future__ import annotations

import time

import grpc
import pytest
import redis
from api_support import CHECKOUT_URL, SECRET, make_event, rpc_error, status_of, with_scripts

from shared import keys, token
from shared.proto import waitroom_pb2 as pb
from shared.proto.waitroom_pb2_grpc import WaitroomServiceStub
from shared.scripts import AdmitResult, Scripts
from shared.sessions import Status
from shared.timefmt import parse_timestamp


def join(stub: WaitroomServiceStub, user: str, event: str = "concert1") -> str:
    return stub.JoinQueue(pb.JoinQueueRequest(user_id=user, event_id=event)).session_id


def status(stub: WaitroomServiceStub, session_id: str) -> pb.QueueStatusResponse:
    return stub.GetQueueStatus(pb.GetQueueStatusRequest(session_id=session_id))


def leave(stub: WaitroomServiceStub, session_id: str) -> pb.LeaveQueueResponse:
    return stub.LeaveQueue(pb.LeaveQueueRequest(session_id=session_id))


def admit(redis_url: str, event: str, limit: int) -> AdmitResult:
    async def go(s: Scripts) -> AdmitResult:
        result = await s.admit(event, limit)
        assert result is not None
        return result

    return with_scripts(redis_url, go)


def verify(redis_url: str, checkout_token: str) -> token.Verdict:
    async def go(s: Scripts) -> token.Verdict:
        return await token.verify(s, SECRET, checkout_token)

    return with_scripts(redis_url, go)


def test_queued_status_shows_position_and_moves_up(
    stub: WaitroomServiceStub, redis_url: str
) -> None:
    make_event(redis_url, "concert1")
    sessions = [join(stub, f"user{i}") for i in range(3)]
    third = status(stub, sessions[2])
    assert third.status == pb.SESSION_STATUS_QUEUED
    assert (third.position, third.queue_length) == (3, 3)
    assert parse_timestamp(third.expires_at) > parse_timestamp(third.queued_at)
    assert third.checkout_token == ""

    leave(stub, sessions[0])
    third = status(stub, sessions[2])
    assert (third.position, third.queue_length) == (2, 2)


def test_admitted_session_is_ready_with_a_valid_token(
    stub: WaitroomServiceStub, redis_url: str
) -> None:
    make_event(redis_url, "concert1", rate=1000, checkout_ttl_seconds=600)
    first, second = join(stub, "user1"), join(stub, "user2")
    assert admit(redis_url, "concert1", 1).admitted == 1

    ready = status(stub, first)
    assert ready.status == pb.SESSION_STATUS_READY
    assert ready.position == 0
    assert ready.checkout_url == CHECKOUT_URL.format(event_id="concert1", session_id=first)
    admitted = parse_timestamp(ready.admitted_at)
    deadline = parse_timestamp(ready.checkout_expires_at)
    assert (deadline - admitted).total_seconds() == pytest.approx(600, abs=1)
    verdict = token.verify_signature(SECRET, ready.checkout_token)
    assert verdict.valid, verdict.reason
    assert verdict.claims is not None
    assert (verdict.claims.session_id, verdict.claims.user_id, verdict.claims.event_id) == (
        first,
        "user1",
        "concert1",
    )
    assert verify(redis_url, ready.checkout_token).valid
    # The one behind moved to the front.
    assert (status(stub, second).position, status(stub, second).queue_length) == (1, 1)
    # Joining again while admitted gives back the admitted session.
    again = stub.JoinQueue(pb.JoinQueueRequest(user_id="user1", event_id="concert1"))
    assert again.session_id == first


def test_leaving_checkout_frees_the_slot_and_revokes_the_token(
    stub: WaitroomServiceStub, redis_url: str, sync_redis: redis.Redis
) -> None:
    make_event(redis_url, "concert1", rate=1000)
    sessions = [join(stub, f"user{i}") for i in range(2)]
    admit(redis_url, "concert1", 2)
    assert sync_redis.zcard(keys.checkout("concert1")) == 2
    checkout_token = status(stub, sessions[0]).checkout_token

    answer = leave(stub, sessions[0])
    assert answer.session_id == sessions[0]
    assert "slot is released" in answer.message
    assert sync_redis.zcard(keys.checkout("concert1")) == 1
    verdict = verify(redis_url, checkout_token)
    assert not verdict.valid
    assert verdict.reason.startswith("revoked")
    cancelled = status(stub, sessions[0])
    assert cancelled.status == pb.SESSION_STATUS_CANCELLED
    assert cancelled.checkout_token == ""
    assert cancelled.admitted_at != ""


def test_leaving_twice_is_harmless(stub: WaitroomServiceStub, redis_url: str) -> None:
    make_event(redis_url, "concert1")
    session = join(stub, "user1")
    assert leave(stub, session).message == "left the queue"
    again = leave(stub, session)
    assert "already ended (CANCELLED)" in again.message
    assert status(stub, session).status == pb.SESSION_STATUS_CANCELLED


def test_finished_sessions_report_their_outcome(stub: WaitroomServiceStub, redis_url: str) -> None:
    make_event(redis_url, "concert1", rate=1000)
    session = join(stub, "user1")
    admit(redis_url, "concert1", 1)

    async def complete(s: Scripts) -> str:
        return await s.finish("concert1", session, Status.COMPLETED, "checkout_completed")

    assert with_scripts(redis_url, complete) == "DONE"
    done = status(stub, session)
    assert done.status == pb.SESSION_STATUS_COMPLETED
    assert done.admitted_at and done.queued_at and done.checkout_expires_at
    assert done.checkout_token == ""


def test_unknown_and_malformed_sessions_are_not_found_wtr001(
    stub: WaitroomServiceStub, redis_url: str
) -> None:
    make_event(redis_url, "concert1")
    real = join(stub, "user1")
    nonce, rest = real.split(".", 1)
    forged = ("A" if nonce[0] != "A" else "B") + nonce[1:] + "." + rest
    other_event = join(stub, "user2").rsplit(".", 1)[0] + ".bm9wZQ"  # "nope"
    for session_id in (forged, other_event, "abc", "x" * 400, "a.b.c"):
        for call in (status, leave):
            code, details = status_of(rpc_error(lambda c=call, s=session_id: c(stub, s)))
            assert code is grpc.StatusCode.NOT_FOUND, session_id
            assert details.startswith("WTR001 - "), details
    assert status(stub, real).status == pb.SESSION_STATUS_QUEUED


def test_empty_session_id_is_invalid_argument(stub: WaitroomServiceStub, redis_url: str) -> None:
    code, details = status_of(rpc_error(lambda: status(stub, "")))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("WTR007 - ")


def test_expired_session_is_failed_precondition_wtr002(
    stub: WaitroomServiceStub, redis_url: str
) -> None:
    make_event(redis_url, "concert1", session_ttl_seconds=1)
    session = join(stub, "user1")
    time.sleep(1.2)
    code, details = status_of(rpc_error(lambda: status(stub, session)))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert details.startswith("WTR002 - ")
    # Leaving an expired session closes it; it then reports EXPIRED, and the user may re-join.
    assert "expired" in leave(stub, session).message
    assert status(stub, session).status == pb.SESSION_STATUS_EXPIRED
    fresh = stub.JoinQueue(pb.JoinQueueRequest(user_id="user1", event_id="concert1"))
    assert fresh.session_id != session
    assert fresh.position == 1
