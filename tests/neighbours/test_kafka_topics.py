"""Topics: `waitroom kafka create-topics` against a real broker, processes that create none by
accident, and the old service's `timestamp` header on every relayed record."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from shared.events import EventConfig, EventStore
from shared.kafka import ensure_topics, import_kafka
from shared.scripts import Scripts
from shared.settings import AdmitterSettings, CommonSettings, KafkaClientSettings
from shared.timefmt import parse_timestamp
from waitroom_admitter.worker import Admitter
from waitroom_cli.kafka import Existing, plan
from waitroom_dev.services import broker_service, free_port

WAITROOM = [sys.executable, "-c", "from waitroom_cli.main import cli; cli()"]


@pytest.fixture(autouse=True)
def _kafka_imported() -> None:
    # kafka-python's import warns through importlib, which pytest's kafka filter misses.
    import_kafka()


def create_topics(env: dict[str, str], *args: str) -> tuple[int, dict[str, object]]:
    result = subprocess.run(
        [*WAITROOM, "kafka", "create-topics", "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode in (0, 4), result.stdout + result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return result.returncode, data


def by_topic(data: dict[str, object]) -> dict[str, dict[str, object]]:
    topics = data["topics"]
    assert isinstance(topics, list)
    return {t["topic"]: t for t in topics}


def test_plan_reports_differences_and_creates_only_what_is_missing() -> None:
    reports = plan({"a": 10, "b": 5, "c": 5}, 3, {"a": Existing(10, 3), "b": Existing(4, 1)})
    assert [(r.topic, r.action, r.differences) for r in reports] == [
        ("a", "exists", ()),
        ("b", "exists", ("partitions 4, wanted 5", "replication factor 1, wanted 3")),
        ("c", "create", ()),
    ]


def test_create_topics_on_a_real_broker(process_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    broker = broker_service(tmp_path, port).start()
    try:
        env = {**process_env, "WAITROOM_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"}
        # Someone made queue.left by hand, with another partition count.
        settings = CommonSettings(kafka_bootstrap_servers=f"127.0.0.1:{port}")
        ensure_topics(settings, {"queue.left": 2}, explicit=True)
        code, data = create_topics(env, "--dry-run", "--replication-factor", "1")
        assert code == 4
        assert by_topic(data)["queue.ready"]["action"] == "create"
        code, data = create_topics(env, "--replication-factor", "1")
        topics = by_topic(data)
        assert code == 4 and data["differing"] == 1
        assert topics["queue.left"]["differences"] == ["partitions 2, wanted 5"]
        created = {name: t["partitions"] for name, t in topics.items() if t["action"] == "created"}
        assert created == {
            "queue.joined": 5,
            "queue.ready": 10,
            "checkout.completed": 10,
            "checkout.failed": 10,
            "checkout.expired": 10,
            "waitroom.dlq": 5,
            "waitroom.audit": 5,
            "waitroom.events": 5,
            "waitroom.draws": 5,
        }
        # Run again: everything exists; what the broker reports is what was created.
        code, data = create_topics(env, "--replication-factor", "1")
        again = by_topic(data)
        assert {t["action"] for t in again.values()} == {"exists"}
        assert again["queue.ready"]["partitions"] == 10
        assert again["queue.ready"]["replication_factor"] == 1
        result = subprocess.run(
            [*WAITROOM, "kafka", "create-topics", "--replication-factor", "1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "queue.left" in result.stdout and "DIFFERS: partitions 2, wanted 5" in result.stdout
    finally:
        broker.stop()


def test_create_topics_says_when_kafka_is_unreachable(process_env: dict[str, str]) -> None:
    env = {**process_env, "WAITROOM_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    result = subprocess.run(
        [*WAITROOM, "kafka", "create-topics"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "cannot reach Kafka" in result.stderr


def test_processes_create_no_topic_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WAITROOM_KAFKA_AUTO_CREATE_TOPICS", raising=False)
    # An address nobody listens on: were anything attempted, this would fail.
    settings = CommonSettings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    assert ensure_topics(settings, {"queue.ready": 10}) == []


def test_relayed_records_carry_the_timestamp_header(
    redis_url: str, bootstrap: str, event_id: str
) -> None:
    from kafka import KafkaConsumer

    common = CommonSettings(
        redis_url=redis_url,
        kafka_bootstrap_servers=bootstrap,
        jwt_secret="header-test-secret-0123456789abcdef",
    )
    settings = AdmitterSettings(sweep_seconds=0.1)

    async def body() -> None:
        async with Redis.from_url(redis_url) as redis:
            await EventStore(redis).create(EventConfig(event_id, rate=1000))
            await Scripts(redis).join(event_id, "u1")
            admitter = Admitter(common, KafkaClientSettings(), settings)
            task = asyncio.create_task(admitter.run())
            deadline = time.monotonic() + 60
            while await redis.xlen(f"wr:{{{event_id}}}:outbox") or not admitter.admitted:
                assert time.monotonic() < deadline, "the outbox was not relayed"
                await asyncio.sleep(0.1)
            admitter.stop()
            await task

    asyncio.run(body())
    consumer = KafkaConsumer(
        "queue.joined",
        "queue.ready",
        bootstrap_servers=[bootstrap],
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
    )
    try:
        found = {}
        deadline = time.monotonic() + 60
        while len(found) < 2 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    if record.key == event_id.encode():
                        found[record.topic] = (dict(record.headers), json.loads(record.value))
    finally:
        consumer.close()
    assert set(found) == {"queue.joined", "queue.ready"}
    for headers, body in found.values():
        stamp = headers["timestamp"].decode()
        assert stamp == body["timestamp"]
        parse_timestamp(stamp)  # RFC 3339
        assert headers["message_id"]
