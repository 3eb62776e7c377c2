"""Per-address limits on JoinQueue through the real API: WTR010, nothing written, state expires."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from shared import keys
from shared.events import EventConfig, EventState, EventStore
from shared.proto import waitroom_pb2 as pb
from shared.proto import waitroom_pb2_grpc
from shared.scripts import Scripts
from tests.api.api_support import ApiProcess, rpc_error, status_of


def _join(
    stub: waitroom_pb2_grpc.WaitroomServiceStub, event_id: str, user: str, ip: str
) -> pb.JoinQueueResponse:
    return stub.JoinQueue(pb.JoinQueueRequest(user_id=user, event_id=event_id, ip_address=ip))


def _refused(
    stub: waitroom_pb2_grpc.WaitroomServiceStub, event_id: str, user: str, ip: str
) -> None:
    code, details = status_of(rpc_error(lambda: _join(stub, event_id, user, ip)))
    assert (code, details) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "WTR010 - too many requests")


async def _snapshot(redis: Redis, event_id: str) -> tuple[int, int, int]:
    return (
        int(await redis.get(keys.seq(event_id)) or 0),
        int(await redis.xlen(keys.outbox(event_id))),
        int(await redis.hlen(keys.sessions(event_id))),
    )


def test_over_a_limit_is_refused_with_wtr010_under_it_is_not_and_the_state_expires(
    redis_url: str, event_id: str, stub: waitroom_pb2_grpc.WaitroomServiceStub, api: ApiProcess
) -> None:
    async def create() -> None:
        async with Redis.from_url(redis_url) as redis:
            config = EventConfig(
                event_id, state=EventState.PAUSED, ip_joins_per_minute=4, ip_live_sessions=2
            )
            await EventStore(redis).create(config)

    asyncio.run(create())
    ip = "203.0.113.7"
    first = _join(stub, event_id, "u1", ip)
    second = _join(stub, event_id, "u2", ip)

    async def snapshot() -> tuple[int, int, int]:
        async with Redis.from_url(redis_url) as redis:
            return await _snapshot(redis, event_id)

    before = asyncio.run(snapshot())
    _refused(stub, event_id, "u3", ip)  # two live sessions from this address already
    assert asyncio.run(snapshot()) == before  # nothing written
    # Other addresses, and joins without an address, are not limited by it.
    _join(stub, event_id, "v1", "2001:db8::1")
    _join(stub, event_id, "w1", "")
    # A session that ends frees its address's place.
    stub.LeaveQueue(pb.LeaveQueueRequest(session_id=first.session_id))
    third = _join(stub, event_id, "u3", ip)
    _join(stub, event_id, "u3", ip)  # asking again for the same session counts as a join
    _refused(stub, event_id, "u4", ip)  # the fifth join within the minute

    async def state() -> tuple[int, int, bool]:
        async with Redis.from_url(redis_url) as redis:
            s = Scripts(redis)
            ttl = int(await redis.pttl(keys.ip_joins(event_id, ip)))
            live = int(await redis.hget(keys.ip_live(event_id), ip) or 0)
            # The minute runs out (made to now): joins from the address are counted afresh.
            await redis.pexpire(keys.ip_joins(event_id, ip), 1)
            await asyncio.sleep(0.05)
            gone = not await redis.exists(keys.ip_joins(event_id, ip))
            # Every session of the address ends: its live count goes with them.
            for sid in (second.session_id, third.session_id):
                await s.leave(event_id, sid)
            return ttl, live, gone

    ttl, live, gone = asyncio.run(state())
    assert 0 < ttl <= 60_000 and live == 2 and gone
    fifth = _join(stub, event_id, "u5", ip)  # a new minute: under the limit again

    async def cleanup() -> bool:
        async with Redis.from_url(redis_url) as redis:
            await Scripts(redis).leave(event_id, fifth.session_id)
            return bool(await redis.hexists(keys.ip_live(event_id), ip))

    assert asyncio.run(cleanup()) is False  # nothing is kept for addresses with no sessions
    with urllib.request.urlopen(f"http://127.0.0.1:{api.metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    for limit in ("live_sessions", "joins_per_minute"):
        series = f'waitroom_joins_rate_limited_total{{event="{event_id}",limit="{limit}"}}'
        assert f"{series} 1.0" in text
    assert ip not in text


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_any_text_as_an_address_is_checked_before_it_names_a_key(text: str) -> None:
    from shared.errors import WaitroomError
    from waitroom_api.errors import validate_ip

    try:
        canonical = validate_ip(text)
    except WaitroomError as exc:
        assert exc.code.prefix == "WTR007"
        return
    assert canonical == "" or ":" in canonical or canonical.count(".") == 3
    assert "}" not in keys.ip_joins("e", canonical).split("}", 1)[1]  # one hash tag only


@pytest.mark.parametrize("limit", ["ip_joins_per_minute", "ip_live_sessions"])
def test_limits_are_per_event_and_off_by_default(limit: str) -> None:
    assert getattr(EventConfig("e"), limit) == 0
