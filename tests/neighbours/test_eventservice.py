"""Events from the event service: a real API process asking a stand-in EventService."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import redis
from eventservice_standin import Answer, StandIn, StandInServer

from shared import keys
from shared.events import EventState, EventStore
from shared.proto import event_pb2, waitroom_pb2, waitroom_pb2_grpc
from shared.scripts import Scripts
from tests.api.api_support import (
    ApiProcess,
    api_env,
    launch,
    make_event,
    rpc_error,
    status_of,
)
from tests.support import with_scripts
from waitroom_dev.services import free_port

SALE_END = "2099-01-01T00:00:00Z"


@pytest.fixture
def standin() -> Iterator[tuple[StandIn, str]]:
    server = StandInServer()
    with server as servicer:
        yield servicer, server.address


@pytest.fixture
def api_with(redis_url: str, bootstrap: str, tmp_path: Path) -> Iterator[Callable[..., ApiProcess]]:
    started: list[ApiProcess] = []

    def start(addr: str, **extra: str) -> ApiProcess:
        env = api_env(redis_url, bootstrap, WAITROOM_EVENT_SERVICE_ADDR=addr, **extra)
        api = launch(env, tmp_path / f"api-{len(started)}.log")
        started.append(api)
        return api

    yield start
    for api in started:
        assert api.stop() == 0, api.log()


def join(api: ApiProcess, event_id: str, user: str = "u1") -> waitroom_pb2.JoinQueueResponse:
    with grpc.insecure_channel(api.address) as channel:
        stub = waitroom_pb2_grpc.WaitroomServiceStub(channel)
        request = waitroom_pb2.JoinQueueRequest(user_id=user, event_id=event_id)
        reply: waitroom_pb2.JoinQueueResponse = stub.JoinQueue(request, timeout=30)
        return reply


def join_error(api: ApiProcess, event_id: str, user: str = "u1") -> tuple[grpc.StatusCode, str]:
    return status_of(rpc_error(lambda: join(api, event_id, user)))


def config_of(sync_redis: redis.Redis, event_id: str) -> dict[str, str]:
    raw = sync_redis.hgetall(keys.config(event_id))
    return {k.decode(): v.decode() for k, v in raw.items()}


def test_an_allowed_event_is_configured_from_the_service_and_the_join_goes_on(
    standin: tuple[StandIn, str], api_with: Callable[..., ApiProcess], sync_redis: redis.Redis
) -> None:
    service, addr = standin
    service.answers["show1"] = Answer(start="2020-01-01T10:00:00Z", end=SALE_END)
    api = api_with(addr, WAITROOM_EVENT_SERVICE_MAX_CONCURRENT="7")
    reply = join(api, "show1")
    assert reply.position == 1
    config = config_of(sync_redis, "show1")
    assert config["source"] == "event-service"
    assert config["state"] == "open"
    assert config["max_concurrent"] == "7"
    assert config["sale_start_ms"] == str(1577872800000)
    assert config["sale_end_ms"] == str(4070908800000)
    assert sync_redis.sismember(keys.EVENTS, "show1")
    # Known now: more joins ask nobody.
    for i in range(5):
        join(api, "show1", f"u{i + 2}")
    assert service.count("GetConfig", "show1") == 1
    assert service.count("FindOne", "show1") == 1


def test_not_allowed_cancelled_and_unknown_events_are_refused_and_the_answer_is_cached(
    standin: tuple[StandIn, str], api_with: Callable[..., ApiProcess], sync_redis: redis.Redis
) -> None:
    service, addr = standin
    service.answers["nowr"] = Answer(allow_wait_room=False)
    service.answers["gone"] = Answer(status=event_pb2.EVENT_STATUS_CANCELLED)
    service.answers["over"] = Answer(end="2001-01-01T00:00:00Z")
    api = api_with(addr)
    code, text = join_error(api, "nowr")
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert text.startswith("WTR009 - waiting room not allowed")
    code, text = join_error(api, "gone")
    assert (code, text[:6]) == (grpc.StatusCode.FAILED_PRECONDITION, "WTR009")
    assert "cancelled" in text
    code, text = join_error(api, "over")
    assert (code, text[:6]) == (grpc.StatusCode.FAILED_PRECONDITION, "WTR009")
    code, text = join_error(api, "nobody")
    assert (code, text[:6]) == (grpc.StatusCode.NOT_FOUND, "WTR006")
    for _ in range(5):
        assert join_error(api, "nowr", "u2")[0] is grpc.StatusCode.FAILED_PRECONDITION
        assert join_error(api, "nobody", "u2")[0] is grpc.StatusCode.NOT_FOUND
    assert service.count("GetConfig", "nowr") == 1
    assert service.count("GetConfig", "nobody") == 1
    assert not sync_redis.exists(keys.config("nowr"), keys.config("gone"), keys.config("over"))


def test_a_burst_of_joins_for_a_new_event_asks_the_service_once(
    standin: tuple[StandIn, str], api_with: Callable[..., ApiProcess]
) -> None:
    service, addr = standin
    service.answers["burst"] = Answer(end=SALE_END)
    service.delay = 0.3  # the question is still in flight while the burst arrives
    api = api_with(addr)
    with grpc.insecure_channel(api.address) as channel:
        stub = waitroom_pb2_grpc.WaitroomServiceStub(channel)
        calls = [
            stub.JoinQueue.future(
                waitroom_pb2.JoinQueueRequest(user_id=f"user-{i}", event_id="burst"), timeout=60
            )
            for i in range(2000)
        ]
        replies = [c.result() for c in calls]
    assert sorted(r.position for r in replies) == list(range(1, 2001))
    assert service.count("GetConfig", "burst") == 1
    assert service.count("FindOne", "burst") == 1


def test_a_cancellation_mid_sale_closes_the_event_at_the_next_refresh(
    standin: tuple[StandIn, str], api_with: Callable[..., ApiProcess], sync_redis: redis.Redis
) -> None:
    service, addr = standin
    service.answers["live"] = Answer(end=SALE_END)
    api = api_with(addr, WAITROOM_EVENT_SERVICE_REFRESH_SECONDS="1")
    join(api, "live")
    service.answers["live"] = Answer(end=SALE_END, status=event_pb2.EVENT_STATUS_CANCELLED)
    deadline = time.monotonic() + 30
    while config_of(sync_redis, "live")["state"] != "closed":
        assert time.monotonic() < deadline, "the cancellation was not applied within 30 s"
        time.sleep(0.1)
    assert config_of(sync_redis, "live")["remote_status"] == "EVENT_STATUS_CANCELLED"
    code, text = join_error(api, "live", "latecomer")
    assert (code, text[:6]) == (grpc.StatusCode.FAILED_PRECONDITION, "WTR009")
    # Those already waiting keep their place (closed admits them; new joins are refused).
    assert sync_redis.hlen(keys.sessions("live")) == 1


def test_an_operators_state_wins_over_the_service(
    standin: tuple[StandIn, str],
    api_with: Callable[..., ApiProcess],
    redis_url: str,
    sync_redis: redis.Redis,
) -> None:
    service, addr = standin
    service.answers["op"] = Answer(end=SALE_END)
    api = api_with(addr, WAITROOM_EVENT_SERVICE_REFRESH_SECONDS="1")
    join(api, "op")

    async def pause(s: Scripts) -> None:
        await EventStore(s.redis, s).set_state("op", EventState.PAUSED)

    with_scripts(redis_url, pause)
    assert config_of(sync_redis, "op")["operator_set"] == "state"
    service.answers["op"] = Answer(end=SALE_END, status=event_pb2.EVENT_STATUS_CANCELLED)
    deadline = time.monotonic() + 30
    while config_of(sync_redis, "op").get("remote_status") != "EVENT_STATUS_CANCELLED":
        assert time.monotonic() < deadline, "the refresh did not run within 30 s"
        time.sleep(0.1)
    assert config_of(sync_redis, "op")["state"] == "paused"


def test_a_slow_service_gets_unavailable_within_the_deadline_and_is_not_hammered(
    standin: tuple[StandIn, str], api_with: Callable[..., ApiProcess], redis_url: str
) -> None:
    service, addr = standin
    service.answers["slow"] = Answer(end=SALE_END)
    service.delay = 60.0
    api = api_with(addr, WAITROOM_EVENT_SERVICE_TIMEOUT_SECONDS="0.5")
    make_event(redis_url, "configured")
    started = time.monotonic()
    code, text = join_error(api, "slow")
    waited = time.monotonic() - started
    assert code is grpc.StatusCode.UNAVAILABLE
    assert "event service" in text and "try again" in text
    # Bounded generously: the point is that it does not wait for the service's 60 s.
    assert waited < 30, f"the join waited {waited:.1f} s for a 0.5 s deadline"
    # Within the backoff the service is not asked again, and configured events are served.
    for i in range(20):
        assert join_error(api, "slow", f"u{i}")[0] is grpc.StatusCode.UNAVAILABLE
    assert service.count("GetConfig", "slow") == 1
    assert join(api, "configured").position == 1


def test_a_service_that_is_down_leaves_configured_events_alone(
    api_with: Callable[..., ApiProcess], redis_url: str
) -> None:
    make_event(redis_url, "known")
    api = api_with(f"127.0.0.1:{free_port()}", WAITROOM_EVENT_SERVICE_TIMEOUT_SECONDS="1")
    code, text = join_error(api, "unknown")
    assert code is grpc.StatusCode.UNAVAILABLE
    assert "event service" in text
    assert join(api, "known").position == 1


def test_without_the_setting_an_unknown_event_is_wtr006_as_before(
    redis_url: str, bootstrap: str, tmp_path: Path
) -> None:
    api = launch(api_env(redis_url, bootstrap), tmp_path / "plain.log")
    try:
        code, text = status_of(rpc_error(lambda: join(api, "never-configured")))
    finally:
        assert api.stop() == 0, api.log()
    assert (code, text[:6]) == (grpc.StatusCode.NOT_FOUND, "WTR006")


def test_burst_checks_in_flight_from_many_threads_do_not_duplicate(
    standin: tuple[StandIn, str], api_with: Callable[..., ApiProcess]
) -> None:
    """Many client connections at once (not one channel) still make one question."""
    service, addr = standin
    service.answers["multi"] = Answer(end=SALE_END)
    service.delay = 0.3
    api = api_with(addr)
    with futures.ThreadPoolExecutor(16) as pool:
        positions = list(pool.map(lambda i: join(api, "multi", f"m{i}").position, range(64)))
    assert sorted(positions) == list(range(1, 65))
    assert service.count("GetConfig", "multi") == 1


def test_a_sale_that_starts_later_opens_with_a_draw_at_its_start(
    standin: tuple[StandIn, str], api_with: Callable[..., ApiProcess], sync_redis: redis.Redis
) -> None:
    """The sale's start becomes the event's scheduled opening: joins before it wait in the
    pre-queue (position 0, opens_at set) and get places by the draw."""
    service, addr = standin
    service.answers["later1"] = Answer(start="2099-06-01T10:00:00Z", end=SALE_END)
    api = api_with(addr)
    reply = join(api, "later1")
    assert (reply.position, reply.opens_at) == (0, "2099-06-01T10:00:00Z")
    config = config_of(sync_redis, "later1")
    assert config["state"] == "open"
    assert config["opens_ms"] == str(4083991200000)
    assert sync_redis.hget(keys.draw("later1"), "commitment")
