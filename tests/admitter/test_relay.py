"""The outbox relay through a Kafka outage: admission goes on, and nothing is lost."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from admitter_support import (
    Admitters,
    create_event,
    import_kafka,
    join_users,
    topic_reader,
    wait_for,
)
from redis.asyncio import Redis

from shared import keys
from shared.events import EventState
from shared.scripts import Scripts
from shared.sessions import Status
from shared.settings import AdmitterSettings, CommonSettings, ConsumerSettings, KafkaClientSettings
from waitroom_admitter.worker import Admitter
from waitroom_dev.services import broker_service, free_port

TOPICS = ["queue.joined", "queue.ready"]


def test_admission_goes_on_while_kafka_is_down_and_every_record_arrives_after(
    admitters: Admitters, redis_url: str, event_id: str, tmp_path: Path
) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = broker_service(tmp_path, port).start()
    admitter = admitters.start(
        "k",
        WAITROOM_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        WAITROOM_KAFKA_REQUEST_TIMEOUT_MS="1500",
    )

    async def body() -> None:
        async with Redis.from_url(redis_url) as redis:
            scripts = Scripts(redis)
            outbox_key = keys.outbox(event_id)
            await create_event(redis, event_id, max_concurrent=1000, rate=1000)

            async def outbox_empty() -> bool:
                return await redis.xlen(outbox_key) == 0

            async def admitted(sessions: list[str]) -> bool:
                views = (await scripts.status(event_id, sessions)).sessions
                return all(v.record and v.record.status is Status.READY for v in views)

            # Before the outage: relayed and acknowledged as usual.
            before = await join_users(scripts, event_id, 50)
            await wait_for(lambda: admitted(before), 30, "the first users to be admitted")
            await wait_for(outbox_empty, 30, "the outbox to drain")
            with topic_reader(bootstrap, TOPICS, event_id) as reader:
                await wait_for(lambda: _count(reader.messages, 100), 30, "the first 100 messages")
            first_broker = {m.message_id for m in reader.messages}

            # Kafka goes away (taking its memory-only topics with it); users keep coming.
            broker.stop()
            during = await join_users(scripts, event_id, 100, first=50)
            await wait_for(lambda: admitted(during), 30, "admission to go on without Kafka")
            await asyncio.sleep(5.0)  # several relay attempts fail meanwhile
            assert await redis.xlen(outbox_key) == 200  # 100 joined + 100 ready, all kept

            # A broker on the same address again: the backlog drains to it.
            broker.start()
            await wait_for(outbox_empty, 60, "the outbox to drain after the outage", 0.2)
            with topic_reader(bootstrap, TOPICS, event_id) as reader:
                await wait_for(lambda: _count(reader.messages, 200), 30, "the backlog to arrive")
            second_broker = {m.message_id for m in reader.messages}

            everyone = before + during
            expected = {f"{s}:{kind}" for s in everyone for kind in ("joined", "ready")}
            assert first_broker | second_broker == expected
            assert second_broker >= {f"{s}:ready" for s in during}

    try:
        asyncio.run(body())
        assert admitter.terminate(10) == 0
    finally:
        broker.stop()
    log = admitter.log()
    # Logged once when the outage began and once when it ended, not once per attempt.
    assert log.count("Kafka unavailable") == 1, log
    recovered = re.findall(r"Kafka available again after (\d+) attempts", log)
    assert len(recovered) == 1 and int(recovered[0]) >= 2, log


async def _count(messages: list[object], at_least: int) -> bool:
    return len(messages) >= at_least


def test_an_unreadable_outbox_record_goes_to_the_dead_letter_topic_and_the_rest_flows(
    redis_url: str, bootstrap: str, event_id: str, process_env: dict[str, str]
) -> None:
    import_kafka()  # on this thread, before the relay's Kafka thread imports it
    common = CommonSettings(
        redis_url=redis_url,
        kafka_bootstrap_servers=bootstrap,
        jwt_secret=process_env["WAITROOM_JWT_SECRET"],
    )
    dead_letter_topic = ConsumerSettings().dlq_topic

    async def body() -> None:
        async with Redis.from_url(redis_url) as redis:
            scripts = Scripts(redis)
            await create_event(redis, event_id, state=EventState.PAUSED)
            first = await join_users(scripts, event_id, 1)
            # As a newer script version might write it: a queue.ready without its fields.
            await redis.xadd(
                keys.outbox(event_id),
                {"t": "queue.ready", "k": "odd:ready", "p": json.dumps({"session_id": "odd"})},
            )
            second = await join_users(scripts, event_id, 1, first=1)
            admitter = Admitter(
                common, KafkaClientSettings(), AdmitterSettings(sweep_seconds=0.2), replica_id="dl"
            )
            run = asyncio.create_task(admitter.run())
            with topic_reader(bootstrap, ["queue.joined", dead_letter_topic], event_id) as reader:

                async def outbox_empty() -> bool:
                    return await redis.xlen(keys.outbox(event_id)) == 0

                await wait_for(outbox_empty, 30, "the outbox to drain")
                await wait_for(lambda: _count(reader.messages, 3), 30, "three messages")
            admitter.stop()
            await asyncio.wait_for(run, 15)
            joined = [m.body["session_id"] for m in reader.distinct("queue.joined").values()]
            assert joined == first + second
            [dead] = reader.distinct(dead_letter_topic).values()
            assert dead.message_id == "odd:ready"
            assert dead.body["topic"] == "queue.ready"
            assert dead.body["fields"] == {"session_id": "odd"}
            assert "KeyError" in dead.body["error"]
            assert admitter.relay is not None and admitter.relay.dead_letters == 1

    asyncio.run(body())
