"""JoinQueue through the real server: places, idempotency, refusals, and what gets recorded."""

from __future__ import annotations

import grpc
import pytest
import redis
from api_support import WEBSOCKET_URL, make_event, rpc_error, status_of, with_scripts

from shared import keys, outbox
from shared.events import EventState
from shared.ids import event_of_session
from shared.proto import waitroom_pb2 as pb
from shared.proto.waitroom_pb2_grpc import WaitroomServiceStub
from shared.scripts import Scripts
from shared.timefmt import parse_timestamp


def join(stub: WaitroomServiceStub, user: str, event: str, **extra: str) -> pb.JoinQueueResponse:
    return stub.JoinQueue(pb.JoinQueueRequest(user_id=user, event_id=event, **extra))


def test_join_returns_a_place_in_line(stub: WaitroomServiceStub, redis_url: str) -> None:
    make_event(redis_url, "concert1", session_ttl_seconds=3600)
    first = join(stub, "user1", "concert1", user_agent="Mozilla/5.0", ip_address="203.0.113.9")
    second = join(stub, "user2", "concert1")

    assert (first.position, first.queue_length) == (1, 1)
    assert (second.position, second.queue_length) == (2, 2)
    assert first.session_id != second.session_id
    assert event_of_session(first.session_id) == "concert1"
    queued = parse_timestamp(first.queued_at)
    expires = parse_timestamp(first.expires_at)
    assert (expires - queued).total_seconds() == pytest.approx(3600, abs=1)
    assert first.websocket_url == WEBSOCKET_URL.format(
        event_id="concert1", session_id=first.session_id
    )


def test_joining_again_gives_the_same_session_and_place(
    stub: WaitroomServiceStub, redis_url: str
) -> None:
    make_event(redis_url, "concert1")
    first = join(stub, "user1", "concert1")
    join(stub, "user2", "concert1")
    again = join(stub, "user1", "concert1")
    assert (again.session_id, again.position, again.queue_length) == (first.session_id, 1, 2)


def test_a_paused_event_still_accepts_joins(stub: WaitroomServiceStub, redis_url: str) -> None:
    make_event(redis_url, "concert1", state=EventState.PAUSED)
    assert join(stub, "user1", "concert1").position == 1


def test_unknown_event_is_not_found_wtr006(stub: WaitroomServiceStub, redis_url: str) -> None:
    code, details = status_of(rpc_error(lambda: join(stub, "user1", "nope")))
    assert code is grpc.StatusCode.NOT_FOUND
    assert details.startswith("WTR006 - ")


def test_closed_event_refuses_with_wtr009(
    stub: WaitroomServiceStub, redis_url: str, sync_redis: redis.Redis
) -> None:
    make_event(redis_url, "concert1", state=EventState.CLOSED)
    code, details = status_of(rpc_error(lambda: join(stub, "user1", "concert1")))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert details.startswith("WTR009 - ")
    assert sync_redis.hlen(keys.users("concert1")) == 0


def test_full_queue_is_resource_exhausted_wtr005(stub: WaitroomServiceStub, redis_url: str) -> None:
    make_event(redis_url, "concert1", max_queue=2)
    join(stub, "user1", "concert1")
    join(stub, "user2", "concert1")
    code, details = status_of(rpc_error(lambda: join(stub, "user3", "concert1")))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.startswith("WTR005 - ")
    # Those already waiting are unaffected and may re-join idempotently.
    assert join(stub, "user2", "concert1").position == 2


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"user_id": ""}, "user_id is required"),
        ({"event_id": ""}, "event_id is required"),
        ({"user_id": "u" * 129}, "user_id is 129 characters"),
        ({"event_id": "e" * 129}, "event_id is 129 characters"),
        ({"user_id": "bad\nid"}, "user_id contains a control character"),
        ({"event_id": "concert\x001"}, "event_id contains a control character"),
        ({"user_id": "\u200b\u200b"}, "user_id contains an invisible character (U+200B, Cf)"),
        ({"user_id": "user1\u202e"}, "user_id contains an invisible character (U+202E, Cf)"),
        ({"user_id": "\ufeffuser1"}, "user_id contains an invisible character (U+FEFF, Cf)"),
        ({"user_id": "a\u2028b"}, "user_id contains an invisible character (U+2028, Zl)"),
        ({"user_id": "user\u00a01"}, "user_id contains an invisible character (U+00A0, Zs)"),
        ({"user_id": "   "}, "user_id has no visible character"),
        ({"user_agent": "Mozilla\u200d/5.0"}, "user_agent contains an invisible character"),
        ({"ip_address": "1.2.3.4\r\n"}, "is not an IPv4 or IPv6 address"),
        ({"ip_address": "203.0.113.300"}, "is not an IPv4 or IPv6 address"),
        ({"ip_address": "fe80::1%eth0"}, "is not an IPv4 or IPv6 address"),
        ({"ip_address": "localhost"}, "ip_address 'localhost' is not an IPv4 or IPv6 address"),
    ],
)
def test_bad_input_is_invalid_argument_and_writes_nothing(
    stub: WaitroomServiceStub,
    redis_url: str,
    sync_redis: redis.Redis,
    fields: dict[str, str],
    named: str,
) -> None:
    make_event(redis_url, "concert1")
    before = sorted(sync_redis.keys("*"))
    request = {"user_id": "user1", "event_id": "concert1", **fields}
    code, details = status_of(rpc_error(lambda: stub.JoinQueue(pb.JoinQueueRequest(**request))))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("WTR007 - ")
    assert named in details
    assert sorted(sync_redis.keys("*")) == before
    assert sync_redis.xlen(keys.outbox("concert1")) == 0


def test_the_longest_valid_ids_are_accepted(stub: WaitroomServiceStub, redis_url: str) -> None:
    event = "e" * 128
    make_event(redis_url, event)
    joined = join(stub, "u" * 128, event, user_agent="a" * 1024)
    assert joined.position == 1
    assert event_of_session(joined.session_id) == event


@pytest.mark.parametrize(
    "extra",
    [
        # A browser's user agent beyond 1024 characters is cut, not refused (as before).
        {"user_agent": "Mozilla/5.0 " + "x" * 5000},
        {"user_agent": "Mozilla/5.0 (X11; Linux x86_64)", "ip_address": "2001:db8::7"},
        {"ip_address": "::ffff:203.0.113.9"},
        {"ip_address": "203.0.113.9"},
        {"ip_address": ""},
    ],
)
def test_browsers_of_every_kind_can_join(
    stub: WaitroomServiceStub, redis_url: str, extra: dict[str, str]
) -> None:
    make_event(redis_url, "concert1")
    assert join(stub, "user1", "concert1", **extra).position == 1


def test_the_outbox_records_exactly_the_joins_and_leaves(
    stub: WaitroomServiceStub, redis_url: str
) -> None:
    make_event(redis_url, "concert1", max_queue=3)
    made = [join(stub, f"user{i}", "concert1") for i in range(3)]
    join(stub, "user1", "concert1")  # idempotent: nothing new
    rpc_error(lambda: join(stub, "user9", "concert1"))  # full: refused
    rpc_error(lambda: join(stub, "", "concert1"))  # invalid: refused
    stub.LeaveQueue(pb.LeaveQueueRequest(session_id=made[0].session_id))
    stub.LeaveQueue(pb.LeaveQueueRequest(session_id=made[0].session_id))  # twice: harmless

    async def read(s: Scripts) -> list[outbox.OutboxEntry]:
        return await outbox.read(s.redis, "concert1", 100)

    entries = with_scripts(redis_url, read)
    assert [(e.topic, e.fields["session_id"]) for e in entries] == [
        *[("queue.joined", m.session_id) for m in made],
        ("queue.left", made[0].session_id),
    ]
    assert [e.fields["position"] for e in entries[:3]] == [1, 2, 3]
    assert entries[3].fields["reason"] == "user_left"
    assert entries[3].fields["user_id"] == "user0"
