"""`waitroom top` and the consumer lag it shows, against a real Redis and a real broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
import warnings

from click.testing import CliRunner
from redis.asyncio import Redis

from shared import heartbeats, keys
from shared import settings as settings_mod
from shared.scripts import Scripts
from tests.conftest import JWT_SECRET
from waitroom_cli.main import cli
from waitroom_cli.top import EventRow, Snapshot, frame, render, with_rates
from waitroom_consumer.broker import Broker

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaProducer


def row(event_id: str, head: int, **fields: object) -> EventRow:
    base: dict[str, object] = dict(
        state="open", waiting=5, in_checkout=3, max_concurrent=5, rate=10.0, outbox=0,
        oldest_wait_seconds=75.0,
    )  # fmt: skip
    return EventRow(event_id=event_id, head=head, **{**base, **fields})  # type: ignore[arg-type]


def test_admissions_per_second_come_from_how_far_the_queue_front_moved() -> None:
    before = Snapshot(1_000, [row("a", 10), row("b", 4)], {}, 0, 0)
    after = Snapshot(3_000, [row("a", 30), row("b", 4), row("new", 1)], {}, 0, 0)
    rated = with_rates(after, before)
    speeds = {r.event_id: r.admitted_per_second for r in rated.events}
    assert speeds == {"a": 10.0, "b": 0.0, "new": None}
    screen = render(rated)
    line = next(x for x in screen.splitlines() if x.startswith("a "))
    assert line.split() == ["a", "open", "5", "3/5", "10.0/10", "75s", "0"]
    assert "ADMITTED/s" in screen and "no events configured" not in screen
    assert "consumer lag -" in screen


def test_top_json_reads_every_event_and_the_consumers_lag(redis_url: str, event_id: str) -> None:
    env = {"WAITROOM_REDIS_URL": redis_url, "WAITROOM_JWT_SECRET": JWT_SECRET}
    runner = CliRunner()
    created = runner.invoke(
        cli, ["event", "create", event_id, "--max-concurrent", "1", "--rate", "1000"], env=env
    )
    assert created.exit_code == 0, created.output

    async def setup() -> None:
        async with Redis.from_url(redis_url) as client:
            scripts = Scripts(client)
            await scripts.join_many(event_id, ["u1", "u2", "u3"])
            await scripts.admit(event_id, 10)
            lag = {"checkout.completed": 7, "checkout.failed": 0}
            await heartbeats.write(client, keys.CONSUMER_HEARTBEATS, "c1", {"lag": lag})
            await heartbeats.write(client, keys.CONSUMER_HEARTBEATS, "c2", {"lag": {"x": 1}})
            await client.hset(keys.CONSUMER_HEARTBEATS, "c2", json.dumps({"ts": 1, "lag": {}}))

    asyncio.run(setup())
    result = runner.invoke(cli, ["top", "--json", "--interval", "0.2"], env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    (event,) = data["events"]
    assert event["event_id"] == event_id and event["state"] == "open"
    assert (event["waiting"], event["in_checkout"], event["max_concurrent"]) == (2, 1, 1)
    assert event["oldest_wait_seconds"] is not None and event["oldest_wait_seconds"] >= 0
    assert event["outbox"] == 5  # the operator's create, three joins, one admission
    assert event["admitted_per_second"] == 0  # nobody moved during the measurement
    # Only the fresh consumer counts; the stale one's figures are not added.
    assert data["consumer_lag"] == {"checkout.completed": 7, "checkout.failed": 0}
    assert data["consumers"] == 1


def test_top_refreshes_until_interrupted(redis_url: str) -> None:
    env = {**os.environ, "WAITROOM_REDIS_URL": redis_url}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from waitroom_cli.main import cli; cli()", "top",
         "--interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + 60
    while seen.count(b"waitroom top") < 3 and time.monotonic() < deadline:
        seen += os.read(proc.stdout.fileno(), 4096)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    # Piped, frames follow each other (no escape codes in a log); on a terminal each one
    # redraws the screen.
    assert seen.count(b"waitroom top") >= 3 and b"no events configured" in seen
    assert b"\x1b[" not in seen and frame("x", terminal=True) == "\x1b[H\x1b[2Jx"
    assert proc.returncode == 0 and b"Traceback" not in err


def test_the_consumer_measures_its_lag_as_end_minus_committed(bootstrap: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    env = {
        "WAITROOM_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "WAITROOM_TOPIC_CHECKOUT_COMPLETED": f"lag-completed-{suffix}",
        "WAITROOM_TOPIC_CHECKOUT_FAILED": f"lag-failed-{suffix}",
        "WAITROOM_TOPIC_CHECKOUT_EXPIRED": f"lag-expired-{suffix}",
        "WAITROOM_CONSUMER_GROUP": f"lag-group-{suffix}",
        "WAITROOM_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "WAITROOM_KAFKA_HEARTBEAT_INTERVAL_MS": "600",
        "WAITROOM_KAFKA_FETCH_MAX_WAIT_MS": "50",
    }
    common = settings_mod.load(settings_mod.CommonSettings, env)
    tuning = settings_mod.load(settings_mod.KafkaClientSettings, env)
    consumer = settings_mod.load(settings_mod.ConsumerSettings, env)
    completed = consumer.topic_completed
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(5):
        producer.send(completed, key=b"e", value=b'{"n": %d}' % i)
    producer.flush(timeout=30)
    producer.close()

    async def go() -> tuple[dict[str, int], dict[str, int]]:
        broker = Broker(common, tuning, consumer)
        await broker.connect()
        try:
            got = []
            deadline = time.monotonic() + 60
            while sum(map(len, got)) < 5 and time.monotonic() < deadline:
                got.append(await broker.poll(200))
            assert sum(map(len, got)) == 5
            before = await broker.lag()
            for batch in got:
                broker.handled(batch)
            assert await broker.commit() >= 1
            return before, await broker.lag()
        finally:
            await broker.close()

    before, after = asyncio.run(go())
    assert before[completed] == 5 and after[completed] == 0
    assert before[consumer.topic_failed] == 0
