"""The fence: a Redis server that has not been checked against Kafka takes no join and admits
nobody; the first record of an idle outbox wakes the relay without an admission step."""

from __future__ import annotations

import grpc
import pytest
from redis.asyncio import Redis
from support import with_scripts

from shared import keys
from shared.errors import Code, ErrorKind, WaitroomError
from shared.events import EventConfig, EventStore
from shared.scripts import Scripts
from waitroom_api.errors import STATUS_OF_KIND


async def _event(s: Scripts, event_id: str, **settings: object) -> None:
    await EventStore(s.redis, s).create(EventConfig(event_id, **settings))  # type: ignore[arg-type]


def test_an_unchecked_server_refuses_joins_and_admits_nobody(redis_url: str, event_id: str) -> None:
    async def body(s: Scripts) -> tuple[int, int]:
        await _event(s, event_id, rate=1000.0)
        await s.join(event_id, "before")
        # As after a restart: the event was last checked by another server.
        await s.redis.hset(keys.config(event_id), "generation", "another-server")
        with pytest.raises(WaitroomError) as refused:
            await s.join(event_id, "during")
        assert refused.value.code is Code.RECOVERING
        fenced = await s.admit(event_id, 10)
        assert fenced is not None
        await s.restore_done(event_id, 0, "")  # checked: nothing lost
        opened = await s.admit(event_id, 10)
        assert opened is not None
        await s.join(event_id, "after")
        return fenced.admitted, opened.admitted

    assert with_scripts(redis_url, body) == (0, 1)


def test_an_event_being_rebuilt_refuses_joins(redis_url: str, event_id: str) -> None:
    async def body(s: Scripts) -> None:
        await _event(s, event_id)
        await s.restore_done(event_id, 0, "")
        await s.restore_begin(event_id, "a test", 0, {})
        with pytest.raises(WaitroomError) as refused:
            await s.join(event_id, "during")
        assert refused.value.code is Code.RECOVERING
        assert (await s.restore_probe(event_id)).recovery == "a test"
        await s.restore_done(event_id, 0, "")
        assert (await s.restore_probe(event_id)).verified

    with_scripts(redis_url, body)


def test_recovering_is_unavailable_on_the_wire() -> None:
    assert Code.RECOVERING.kind is ErrorKind.UNAVAILABLE
    assert STATUS_OF_KIND[ErrorKind.UNAVAILABLE] is grpc.StatusCode.UNAVAILABLE


def test_a_join_into_full_checkout_wakes_only_the_relay(redis_url: str, event_id: str) -> None:
    async def body(s: Scripts) -> list[str]:
        await _event(s, event_id, max_concurrent=1, rate=1000.0)
        await s.join(event_id, "first")
        await s.admit(event_id, 10)  # checkout is full now
        await s.redis.delete(keys.outbox(event_id))  # as if the relay had relayed everything
        listener = Redis.from_url(redis_url)
        pubsub = listener.pubsub()
        await pubsub.subscribe(keys.NOTIFY_CHANNEL)
        await pubsub.get_message(timeout=1)  # the subscription's confirmation
        await s.join(event_id, "second")  # idle outbox: wakes the relay
        await s.join(event_id, "third")  # the relay is busy with it: no second wake-up
        heard = []
        while (message := await pubsub.get_message(timeout=0.5)) is not None:
            if message["type"] == "message":
                heard.append(message["data"].decode())
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await listener.aclose()
        return heard

    assert with_scripts(redis_url, body) == [event_id + keys.RELAY_ONLY_SUFFIX]


def test_health_names_events_being_rebuilt(redis_url: str, event_id: str) -> None:
    from shared.settings import CommonSettings
    from waitroom_api.health import HealthProbe

    async def body(s: Scripts) -> list[str]:
        await _event(s, event_id)
        probe = HealthProbe(s.redis, CommonSettings(kafka_bootstrap_servers=""))
        answers = [await probe._read_recovery()]
        await s.restore_begin(event_id, "a test", 0, {})
        answers.append(await probe._read_recovery())
        await s.restore_done(event_id, 0, "")
        await s.redis.hset(keys.config(event_id), "generation", "another-server")
        answers.append(await probe._read_recovery())
        return answers

    answers = with_scripts(redis_url, body)
    assert answers == ["ok", f"recovering: {event_id}", f"unchecked: {event_id}"]
