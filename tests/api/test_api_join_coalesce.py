"""Coalesced joins: a burst of joins sent as batches answers each caller what its own join
would have, and leaves Redis exactly as those joins one by one would have."""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from typing import Any

import grpc
import pytest
import redis
from api_support import ApiProcess, make_event
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from shared import keys
from shared.backoff import is_transient
from shared.events import EventConfig, EventState, EventStore
from shared.proto import waitroom_pb2 as pb
from shared.proto.waitroom_pb2_grpc import WaitroomServiceStub
from shared.scripts import (
    JOIN_BATCH_MAX_USERS,
    JoinRequest,
    JoinResult,
    RateLimited,
    Scripts,
    plan_join_batch,
)
from shared.sessions import Status
from waitroom_api.coalesce import JoinCoalescer
from waitroom_dev.services import free_port

# --- one burst, batched and one by one --------------------------------------------------------

OPEN, LIVE, CLOSED, FENCED, MISSING = "open1", "live1", "closed1", "fenced1", "missing1"


async def _setup(redis_url: str) -> None:
    """Events of every kind, and sessions that met the burst: a waiting one, an admitted one,
    one whose place ran out."""
    async with Redis.from_url(redis_url) as client:
        s, store = Scripts(client), EventStore(client)
        await store.create(EventConfig(OPEN, max_queue=14, ip_joins_per_minute=3))
        await store.create(EventConfig(LIVE, state=EventState.PAUSED, ip_live_sessions=2))
        await store.create(EventConfig(CLOSED, state=EventState.CLOSED))
        await store.create(EventConfig(FENCED))
        await client.hset(keys.config(FENCED), "recovery", "rebuilding")
        await s.join(OPEN, "admitted")
        assert (await s.admit(OPEN, 1)) is not None
        await s.join(OPEN, "waiting", ip_address="203.0.113.1")
        expired = await s.join(OPEN, "expired")
        ticket = expired.session_id.split(".")[1]
        record = json.loads(await client.hget(keys.sessions(OPEN), ticket))
        record[4] = 1  # its place ran out long ago
        await client.hset(keys.sessions(OPEN), ticket, json.dumps(record))


def _burst() -> list[tuple[str, str, str]]:
    """(event, user, address) in arrival order: repeats, refusals of every kind, mixed events."""
    a, b, c = "203.0.113.1", "198.51.100.2", "2001:db8::9"
    burst = [(OPEN, f"u{i}", (a, b, c, "")[i % 4]) for i in range(24)]
    burst += [(OPEN, u, "") for u in ("admitted", "waiting", "expired")]
    burst += [(LIVE, f"v{i}", (a, b)[i % 2]) for i in range(8)]
    burst += [(CLOSED, "u1", a), (FENCED, "u2", ""), (MISSING, "u3", b)]
    burst = burst * 2  # everyone asks twice
    random.Random(11).shuffle(burst)
    return burst


def _answer(outcome: JoinResult | BaseException) -> tuple[Any, ...]:
    """What a caller is told, without the parts two runs cannot share (nonce, clock)."""
    if isinstance(outcome, JoinResult):
        ticket = int(outcome.session_id.split(".")[1])
        return (
            "OK",
            ticket,
            outcome.position,
            outcome.queue_length,
            outcome.status,
            outcome.created,
            outcome.expires_ms - outcome.queued_ms,
        )
    if isinstance(outcome, RateLimited):
        return ("WTR010", outcome.limit)
    return (type(outcome).__name__, str(outcome))


def _state(client: redis.Redis, events: list[str]) -> dict[str, Any]:
    """Everything the joins wrote, without nonces and times."""
    state: dict[str, Any] = {}
    for event in events:
        sessions = {
            # status, user, reason, address: nonce and times differ between two runs
            int(t): [v for i, v in enumerate(json.loads(raw)) if i in (0, 1, 8, 9)]
            for t, raw in client.hgetall(keys.sessions(event)).items()
        }
        outbox = [
            (
                f[b"t"],
                f[b"k"].split(b".", 1)[1],
                {k: v for k, v in json.loads(f[b"p"]).items() if not k.endswith("_ms")}
                | {"session_id": json.loads(f[b"p"])["session_id"].split(".", 1)[1]},
            )
            for _, f in client.xrange(keys.outbox(event))
        ]
        state[event] = {
            "seq": client.get(keys.seq(event)),
            "users": client.hgetall(keys.users(event)),
            "sessions": sessions,
            "holes": client.zrange(keys.holes(event), 0, -1),
            "ip_live": client.hgetall(keys.ip_live(event)),
            "ip_joins": {k: client.get(k) for k in sorted(client.keys(f"wr:{{{event}}}:ip:j*"))},
            "outbox": outbox,
        }
    return state


def test_a_burst_in_batches_answers_and_writes_what_lone_joins_in_order_would(
    redis_url: str, sync_redis: redis.Redis
) -> None:
    burst = _burst()
    events = [OPEN, LIVE, CLOSED, FENCED, MISSING]

    async def batched() -> tuple[list[Any], JoinCoalescer, dict[str, int]]:
        await _setup(redis_url)
        async with Redis.from_url(redis_url) as client, client.pubsub() as sub:
            await sub.subscribe(keys.NOTIFY_CHANNEL)
            joins = JoinCoalescer(Scripts(client))
            outcomes = await asyncio.gather(
                *(joins.join(e, u, ip) for e, u, ip in burst), return_exceptions=True
            )
            # A marker after the burst: the channel keeps order, so every announcement the
            # burst made has arrived once the marker has.
            await client.publish(keys.NOTIFY_CHANNEL, "end-of-burst")
            heard: dict[str, int] = defaultdict(int)
            deadline = asyncio.get_running_loop().time() + 60
            while asyncio.get_running_loop().time() < deadline:
                message = await sub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is None:  # a subscription's confirmation, or nothing yet
                    continue
                if message["data"] == b"end-of-burst":
                    return outcomes, joins, dict(heard)
                heard[message["data"].decode()] += 1
            raise AssertionError("the marker never arrived")

    async def one_by_one() -> list[Any]:
        await _setup(redis_url)
        async with Redis.from_url(redis_url) as client:
            s = Scripts(client)
            outcomes: list[Any] = []
            for e, u, ip in burst:
                try:
                    outcomes.append(await s.join(e, u, ip_address=ip))
                except Exception as exc:
                    outcomes.append(exc)
            return outcomes

    together, joins, heard = asyncio.run(batched())
    together_state = _state(sync_redis, events)
    sync_redis.flushall()
    alone = asyncio.run(one_by_one())
    alone_state = _state(sync_redis, events)

    assert [_answer(o) for o in together] == [_answer(o) for o in alone]
    assert together_state == alone_state
    # One script call per event for the whole burst, and one announcement per event that
    # gained sessions (the open event can admit: admission; the paused one: the relay's).
    assert (joins.batches, joins.joins) == (len(events), len(burst))
    assert heard == {OPEN: 1, f"{LIVE}\n": 1}
    # The burst met every kind of answer, so the comparison above covered each.
    kinds = {_answer(o)[0] for o in together} | {
        _answer(o)[1] for o in together if _answer(o)[0] == "WTR010"
    }
    assert kinds >= {"OK", "WTR010", "joins_per_minute", "live_sessions", "WaitroomError"}
    texts = {str(o) for o in together if type(o).__name__ == "WaitroomError"}
    assert {t.split(" ")[0] for t in texts} == {"WTR005", "WTR006", "WTR009", "WTR011"}
    statuses = {o.status for o in together if isinstance(o, JoinResult)}
    assert statuses == {Status.QUEUED, Status.READY}


def test_a_burst_larger_than_one_call_keeps_arrival_order(redis_url: str) -> None:
    make_event(redis_url, "concert1")
    users = [f"u{i}" for i in range(2 * JOIN_BATCH_MAX_USERS + 50)]

    async def burst() -> tuple[list[JoinResult], JoinCoalescer]:
        async with Redis.from_url(redis_url) as client:
            joins = JoinCoalescer(Scripts(client))
            return list(await asyncio.gather(*(joins.join("concert1", u) for u in users))), joins

    joined, joins = asyncio.run(burst())
    # One batch, sent as three calls pipelined in order: places follow arrival.
    assert (joins.batches, joins.joins) == (1, len(users))
    assert [j.position for j in joined] == list(range(1, len(users) + 1))
    assert [int(j.session_id.split(".")[1]) for j in joined] == list(range(1, len(users) + 1))


def test_a_join_that_breaks_in_the_script_fails_alone(
    redis_url: str, sync_redis: redis.Redis
) -> None:
    make_event(redis_url, "concert1")
    # A user index pointing at a record that is not JSON: the script raises for that user.
    sync_redis.hset(keys.users("concert1"), "broken", 7)
    sync_redis.hset(keys.sessions("concert1"), 7, "{not json")

    async def burst() -> list[Any]:
        async with Redis.from_url(redis_url) as client:
            joins = JoinCoalescer(Scripts(client))
            users = ["a", "broken", "b", "broken", "c"]
            return await asyncio.gather(
                *(joins.join("concert1", u) for u in users), return_exceptions=True
            )

    a, broken, b, again, c = asyncio.run(burst())
    assert [(r.position, r.created) for r in (a, b, c)] == [(1, True), (2, True), (3, True)]
    for error in (broken, again):
        assert isinstance(error, ResponseError) and not is_transient(error)
        assert "Expected object key string" in str(error)  # cjson's, as a lone join raises


def test_a_caller_gone_before_its_batch_left_is_not_joined(redis_url: str) -> None:
    make_event(redis_url, "concert1")

    async def go() -> tuple[JoinResult, int]:
        async with Redis.from_url(redis_url) as client:
            s = Scripts(client)
            joins = JoinCoalescer(s)
            gone = asyncio.create_task(joins.join("concert1", "gone"))
            stay = asyncio.create_task(joins.join("concert1", "stay"))
            # Both tasks enqueue in the next turn, before the batch's task first runs.
            await asyncio.sleep(0)
            gone.cancel()
            with pytest.raises(asyncio.CancelledError):
                await gone
            joined = await stay
            return joined, (await s.status("concert1", [])).queue_length

    joined, length = asyncio.run(go())
    assert (joined.position, length) == (1, 1)


def test_a_busy_process_gathers_joins_of_later_loop_turns_and_an_idle_one_does_not_wait(
    redis_url: str,
) -> None:
    make_event(redis_url, "concert1")

    async def two_joins_a_turn_apart(joins: JoinCoalescer, a: str, b: str) -> list[int]:
        before = joins.batches
        first = asyncio.create_task(joins.join("concert1", a))
        await asyncio.sleep(0)  # the batch's task runs: an idle process sends ``a`` now
        await asyncio.sleep(0)
        second = asyncio.create_task(joins.join("concert1", b))
        positions = [(await first).position, (await second).position]
        return [joins.batches - before, *positions]

    async def go() -> tuple[list[int], list[int]]:
        async with Redis.from_url(redis_url) as client:
            joins = JoinCoalescer(Scripts(client))
            idle = await two_joins_a_turn_apart(joins, "u1", "u2")
            busy = await two_joins_a_turn_apart(joins, "u3", "u4")  # a batch just left
            return idle, busy

    idle, busy = asyncio.run(go())
    assert idle == [2, 1, 2]  # each sent at once: two calls
    assert busy == [1, 3, 4]  # gathered into one call, in arrival order


def test_when_redis_is_unreachable_every_caller_hears_it(redis_url: str) -> None:
    async def go() -> list[Any]:
        async with Redis(port=free_port(), socket_connect_timeout=5) as client:
            joins = JoinCoalescer(Scripts(client))
            users = [f"u{i}" for i in range(5)]
            return await asyncio.gather(
                *(joins.join("concert1", u) for u in users), return_exceptions=True
            )

    outcomes = asyncio.run(go())
    assert all(isinstance(o, RedisConnectionError) and is_transient(o) for o in outcomes)


# --- through the real server ------------------------------------------------------------------


def test_a_concurrent_burst_through_the_server_gets_consistent_answers(
    api_process: ApiProcess, redis_url: str
) -> None:
    make_event(redis_url, "g-open")
    make_event(redis_url, "g-full", max_queue=10)
    make_event(redis_url, "g-ip", ip_live_sessions=3)
    make_event(redis_url, "g-closed", state=EventState.CLOSED)
    ips = ["203.0.113.5", "2001:db8::5", "198.51.100.5"]
    requests = [("g-open", f"o{i}", "") for i in range(60)]
    requests += [("g-full", f"f{i}", "") for i in range(25)]
    requests += [("g-ip", f"i{i}", ips[i % 3]) for i in range(18)]
    requests += [("g-closed", f"c{i}", "") for i in range(5)]
    requests += [("g-none", f"n{i}", "") for i in range(5)]
    requests = requests * 3
    random.Random(5).shuffle(requests)

    async def join_all() -> list[tuple[str, str, str, Any]]:
        async with grpc.aio.insecure_channel(api_process.address) as channel:
            stub = WaitroomServiceStub(channel)

            async def one(event: str, user: str, ip: str) -> tuple[str, str, str, Any]:
                request = pb.JoinQueueRequest(user_id=user, event_id=event, ip_address=ip)
                try:
                    answer = await stub.JoinQueue(request, timeout=60)
                    return event, user, ip, (answer.session_id, answer.position)
                except grpc.aio.AioRpcError as exc:
                    return event, user, ip, (exc.code(), exc.details())

            return await asyncio.gather(*(one(*r) for r in requests))

    answers = asyncio.run(join_all())
    by_user: dict[tuple[str, str], set[Any]] = defaultdict(set)
    for event, user, _, answer in answers:
        by_user[event, user].add(answer)
    # However often a user asked, and whichever batch each request went in: one answer.
    assert all(len(a) == 1 for a in by_user.values())
    placed: dict[str, list[int]] = defaultdict(list)
    refused: dict[str, set[Any]] = defaultdict(set)
    for (event, _), found in by_user.items():
        ((first, second),) = found
        if isinstance(first, str):
            placed[event].append(second)
        else:
            refused[event].add((first, second.split(" ")[0]))
    assert sorted(placed["g-open"]) == list(range(1, 61))
    assert sorted(placed["g-full"]) == list(range(1, 11))
    assert sorted(placed["g-ip"]) == list(range(1, 10))  # 3 live sessions per address
    assert refused == {
        "g-full": {(grpc.StatusCode.RESOURCE_EXHAUSTED, "WTR005")},
        "g-ip": {(grpc.StatusCode.RESOURCE_EXHAUSTED, "WTR010")},
        "g-closed": {(grpc.StatusCode.FAILED_PRECONDITION, "WTR009")},
        "g-none": {(grpc.StatusCode.NOT_FOUND, "WTR006")},
    }


# --- the batch's layout (pure) ----------------------------------------------------------------

_requests = st.lists(
    st.builds(
        JoinRequest,
        st.sampled_from(["u1", "u2", "u3", "u4"]),
        st.sampled_from(["", "203.0.113.1", "2001:db8::1", "198.51.100.7"]),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(requests=_requests, max_users=st.integers(min_value=1, max_value=12))
def test_a_batch_plan_keeps_order_bounds_calls_and_points_each_user_at_its_address(
    requests: list[JoinRequest], max_users: int
) -> None:
    chunks = plan_join_batch(requests, max_users)
    assert [r for c in chunks for r in c.requests] == requests
    assert all(1 <= len(c.requests) <= max_users for c in chunks)
    assert len(chunks) == -(-len(requests) // max_users)
    for chunk in chunks:
        known = [r.ip_address for r in chunk.requests if r.ip_address]
        assert list(chunk.addresses) == list(dict.fromkeys(known))
        for request, counter in zip(chunk.requests, chunk.counters, strict=True):
            if request.ip_address:
                assert chunk.addresses[counter - 1] == request.ip_address
            else:
                assert counter == 0


def test_a_batch_plan_refuses_an_empty_call_size() -> None:
    with pytest.raises(ValueError, match="max_users"):
        plan_join_batch([JoinRequest("u1")], 0)
