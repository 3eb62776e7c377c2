"""StreamQueuePosition through the real server: what a waiting browser sees, and fan-out cost."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator

import grpc
import redis
from api_support import CHECKOUT_URL, SECRET, ApiProcess, make_event, rpc_error, status_of
from api_support import with_scripts as run_scripts

from shared import token
from shared.proto import waitroom_pb2 as pb
from shared.proto.waitroom_pb2_grpc import WaitroomServiceStub
from shared.scripts import Scripts
from shared.sessions import Status

Updates = Iterator[pb.PositionUpdate]


def join(stub: WaitroomServiceStub, user: str) -> str:
    return stub.JoinQueue(pb.JoinQueueRequest(user_id=user, event_id="concert1")).session_id


def open_stream(stub: WaitroomServiceStub, session_id: str) -> Updates:
    # The deadline only guards against a hang; every test ends its streams long before.
    request = pb.StreamPositionRequest(session_id=session_id)
    return stub.StreamQueuePosition(request, timeout=30)  # type: ignore[no-any-return]


def test_stream_sends_the_state_at_once_then_changes_then_ends(
    stub: WaitroomServiceStub, redis_url: str
) -> None:
    make_event(redis_url, "concert1")
    first, _, third = (join(stub, f"user{i}") for i in range(3))
    updates = open_stream(stub, third)

    now = next(updates)
    assert (now.session_id, now.status, now.position, now.queue_length) == (
        third,
        pb.SESSION_STATUS_QUEUED,
        3,
        3,
    )
    assert now.updated_at.endswith("Z")

    stub.LeaveQueue(pb.LeaveQueueRequest(session_id=first))
    moved = next(updates)
    assert (moved.status, moved.position, moved.queue_length) == (pb.SESSION_STATUS_QUEUED, 2, 2)

    stub.LeaveQueue(pb.LeaveQueueRequest(session_id=third))
    last = next(updates)
    assert last.status == pb.SESSION_STATUS_CANCELLED
    assert list(updates) == []  # the stream ended after the terminal status


def test_stream_announces_admission_with_a_token(stub: WaitroomServiceStub, redis_url: str) -> None:
    make_event(redis_url, "concert1", rate=1000)
    session = join(stub, "user1")
    updates = open_stream(stub, session)
    assert next(updates).position == 1

    async def admit_then_complete(s: Scripts) -> None:
        await s.admit("concert1", 1)

    run_scripts(redis_url, admit_then_complete)
    ready = next(updates)
    assert ready.status == pb.SESSION_STATUS_READY
    assert ready.position == 0
    assert ready.checkout_url == CHECKOUT_URL.format(event_id="concert1", session_id=session)
    verdict = token.verify_signature(SECRET, ready.checkout_token)
    assert verdict.valid and verdict.claims is not None
    assert verdict.claims.session_id == session

    async def complete(s: Scripts) -> None:
        await s.finish("concert1", session, Status.COMPLETED, "checkout_completed")

    run_scripts(redis_url, complete)
    done = next(updates)
    assert done.status == pb.SESSION_STATUS_COMPLETED
    assert done.checkout_token == ""
    assert list(updates) == []


def test_stream_reports_expiry_once_and_ends(stub: WaitroomServiceStub, redis_url: str) -> None:
    make_event(redis_url, "concert1", session_ttl_seconds=1)
    session = join(stub, "user1")
    updates = open_stream(stub, session)
    assert next(updates).status == pb.SESSION_STATUS_QUEUED
    # Nobody announces an expiry: the watcher's periodic re-read notices it.
    assert [u.status for u in updates] == [pb.SESSION_STATUS_EXPIRED]
    # Opening a stream on an expired session: one EXPIRED update, then the end.
    assert [u.status for u in open_stream(stub, session)] == [pb.SESSION_STATUS_EXPIRED]


def test_stream_of_an_unknown_session_is_not_found(
    stub: WaitroomServiceStub, redis_url: str
) -> None:
    make_event(redis_url, "concert1")
    session = join(stub, "user1")
    forged = ("A" if session[0] != "A" else "B") + session[1:]
    for session_id in (forged, "garbage"):
        code, details = status_of(rpc_error(lambda s=session_id: next(open_stream(stub, s))))
        assert code is grpc.StatusCode.NOT_FOUND
        assert details.startswith("WTR001 - ")


def _metric(api: ApiProcess, line_start: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{api.metrics_port}/metrics", timeout=5) as r:
        text: str = r.read().decode()
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric line starting with {line_start!r}")


def _script_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(stats.get(name, {}).get("calls", 0)) for name in stats if "eval" in name)


def test_many_streams_cost_one_read_per_event_not_one_per_stream(
    api_process: ApiProcess, redis_url: str, sync_redis: redis.Redis
) -> None:
    """1,500 streams opened at once on one event, 3 users leaving: every stream hears of it,
    while the watcher's re-reads take fewer script calls in total than there are streams
    (polling per stream would take 1,500 calls for every single re-read). Opening that many at
    once also exceeds grpc's default limit of 1,000 calls waiting to be picked up."""
    streams, leaving = 1500, 3
    make_event(redis_url, "concert1")

    async def join_all(s: Scripts) -> list[str]:
        return [(await s.join("concert1", f"user{i}")).session_id for i in range(streams)]

    sessions = run_scripts(redis_url, join_all)

    async def scenario() -> tuple[int, float]:
        async with grpc.aio.insecure_channel(api_process.address) as channel:
            stub = WaitroomServiceStub(channel)
            calls = [
                stub.StreamQueuePosition(pb.StreamPositionRequest(session_id=s), timeout=60)
                for s in sessions
            ]
            firsts = await asyncio.gather(*(call.read() for call in calls))
            assert [f.position for f in firsts] == list(range(1, streams + 1))  # type: ignore[union-attr]
            opened = _metric(api_process, "waitroom_streams_open ")
            sync_redis.config_resetstat()

            for session_id in sessions[:leaving]:
                await stub.LeaveQueue(pb.LeaveQueueRequest(session_id=session_id))

            async def settles(call: grpc.aio.UnaryStreamCall, expected: int) -> None:  # type: ignore[type-arg]
                while True:
                    update = await call.read()
                    assert update is not grpc.aio.EOF
                    if update.position == expected:  # type: ignore[union-attr]
                        return

            await asyncio.wait_for(
                asyncio.gather(
                    *(settles(calls[i], i + 1 - leaving) for i in range(leaving, streams))
                ),
                30,
            )
            script_calls = _script_calls(sync_redis) - leaving
            for call in calls:
                call.cancel()
            return script_calls, opened

    status_calls, opened = asyncio.run(scenario())
    assert opened == streams
    assert 0 < status_calls < streams, status_calls

    deadline = time.monotonic() + 10
    while _metric(api_process, "waitroom_streams_open ") != 0:
        assert time.monotonic() < deadline, "cancelled streams stayed registered"
        time.sleep(0.05)


def test_stream_durations_are_recorded_to_the_first_message_or_the_failure(
    api_process: ApiProcess, stub: WaitroomServiceStub, redis_url: str
) -> None:
    """The handler writes through the context: the interceptor still times each stream, to its
    first message (it stays open), or to its failure with the status it ended with."""
    make_event(redis_url, "concert1")
    method = "/waitroom.v1.WaitroomService/StreamQueuePosition"
    count = 'waitroom_rpc_duration_seconds_count{code="%s",method="' + method + '"}'
    ok_before = _metric_or_0(api_process, count % "OK")
    missing_before = _metric_or_0(api_process, count % "NOT_FOUND")
    updates = open_stream(stub, join(stub, "user1"))
    assert next(updates).position == 1  # the stream is open and stays so
    # The server observes once its write returned, which may be just after the client read it.
    assert _metric_reaches(api_process, count % "OK", ok_before + 1)
    rpc_error(lambda: next(open_stream(stub, "garbage")))
    assert _metric_reaches(api_process, count % "NOT_FOUND", missing_before + 1)
    assert _metric_or_0(api_process, count % "OK") == ok_before + 1
    updates.cancel()  # type: ignore[attr-defined]


def _metric_reaches(api: ApiProcess, line_start: str, value: float, timeout: float = 5) -> bool:
    """Whether the metric equals ``value`` within ``timeout``; it must not pass it meanwhile."""
    deadline = time.monotonic() + timeout
    while (now := _metric_or_0(api, line_start)) < value and time.monotonic() < deadline:
        time.sleep(0.02)
    return now == value


def _metric_or_0(api: ApiProcess, line_start: str) -> float:
    try:
        return _metric(api, line_start)
    except AssertionError:
        return 0.0
