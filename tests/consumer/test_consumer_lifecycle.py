"""Lifecycle: SIGTERM drains and commits, replicas share the work, health checks, the CLI."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from click.testing import CliRunner, Result
from consumer_support import (
    ConsumerProcess,
    Topics,
    admitted_sessions,
    in_checkout,
    outcome,
    produce,
    records,
    wait_until,
)

from shared import keys
from shared.cli import RET_CONNECT, RET_ERROR, RET_FORCED, RET_INVALID, RET_OK, RET_SETTINGS
from shared.sessions import Status

Start = Callable[[dict[str, str]], ConsumerProcess]


def waitroom(env: dict[str, str], *args: str) -> Result:
    """Run a ``waitroom`` command in this process (fast), with ``env`` as its environment."""
    from waitroom_cli.main import cli

    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def committed(bootstrap: str, group: str, topic: str) -> int:
    """The sum of the group's committed offsets on a topic's partitions."""
    from kafka import KafkaConsumer, TopicPartition

    reader = KafkaConsumer(bootstrap_servers=[bootstrap], group_id=group)
    try:
        partitions = wait_until(lambda: reader.partitions_for_topic(topic), what="metadata")
        return sum(reader.committed(TopicPartition(topic, p)) or 0 for p in partitions)
    finally:
        reader.close(autocommit=False)


def handled_done(log: str) -> int:
    """The ``done`` count from the consumer's last log line (its repr on the way out)."""
    match = re.search(r"consumer stopped: .*results=\{[^}]*'done': (\d+)", log)
    return int(match.group(1)) if match else 0


def test_sigterm_finishes_commits_and_exits_zero_and_the_checkout_cli_feeds_the_consumer(
    redis_url: str,
    bootstrap: str,
    event_id: str,
    topics: Topics,
    consumer_env: dict[str, str],
    consumers: Start,
) -> None:
    sids, _ = admitted_sessions(redis_url, event_id, admitted=6)
    first = consumers(consumer_env)
    produce(
        bootstrap,
        [
            (topics.completed, event_id.encode(), outcome("checkout.completed", sid, event_id))
            for sid in sids[:3]
        ],
    )
    wait_until(lambda: in_checkout(redis_url, event_id) == 3, what="three completions")
    before = records(redis_url, event_id, sids[:3])

    started = time.monotonic()
    assert first.terminate() == 0, first.log()
    assert time.monotonic() - started < 15  # WAITROOM_CONSUMER_GRACE_SECONDS
    assert "consumer stopped" in first.log()
    assert committed(bootstrap, topics.group, topics.completed) == 3

    second = consumers(consumer_env)
    sent = waitroom(consumer_env, "checkout", "complete", sids[3], "--json")
    assert sent.exit_code == RET_OK, sent.stderr
    body = json.loads(sent.stdout)
    assert body["topic"] == topics.completed and body["key"] == event_id
    assert body["message"]["session_id"] == sids[3]
    assert body["message"]["user_id"] == "user3"  # read from the session in Redis
    failed = waitroom(consumer_env, "checkout", "fail", sids[4])
    assert failed.exit_code == RET_OK and topics.failed in failed.stdout, failed.stderr
    args = ["checkout", "expire", sids[5], "--user-id", "someone", "--event-id", event_id]
    expired = waitroom(consumer_env, *args, "--json")
    assert expired.exit_code == RET_OK, expired.stderr
    assert json.loads(expired.stdout)["message"]["expired_at"]

    wait_until(lambda: in_checkout(redis_url, event_id) == 0, what="the CLI's messages")
    statuses = [r.status for r in records(redis_url, event_id, sids[3:]) if r]
    assert statuses == [Status.COMPLETED, Status.FAILED, Status.EXPIRED]
    assert records(redis_url, event_id, sids[:3]) == before
    assert second.terminate() == 0, second.log()
    assert committed(bootstrap, topics.group, topics.completed) == 4
    assert committed(bootstrap, topics.group, topics.failed) == 1


def test_two_replicas_share_the_partitions_and_one_leaving_loses_nothing(
    redis_url: str,
    bootstrap: str,
    event_id: str,
    topics: Topics,
    consumer_env: dict[str, str],
    consumers: Start,
) -> None:
    n = 600
    sids, _ = admitted_sessions(redis_url, event_id, admitted=n)
    messages = [
        (topics.completed, sid.encode(), outcome("checkout.completed", sid, event_id))
        for sid in sids
    ]

    def flow(part: list[tuple[str, bytes, bytes]]) -> None:
        for i in range(0, len(part), 20):
            produce(bootstrap, part[i : i + 20])
            time.sleep(0.1)

    def handled(count: int) -> Callable[[], bool]:
        return lambda: in_checkout(redis_url, event_id) <= n - count

    a = consumers(consumer_env)
    flow(messages[:200])
    wait_until(handled(200), what="the first 200, all by the first replica")
    b = consumers(consumer_env)
    wait_until(lambda: "assigned" in b.log(), what="the second replica's partitions")
    flow(messages[200:400])  # spread over every partition, so over both replicas
    wait_until(handled(400), what="the next 200, shared")
    producer = threading.Thread(target=flow, args=(messages[400:],))
    producer.start()
    try:
        assert a.terminate() == 0, a.log()  # while messages flow
    finally:
        producer.join()
    wait_until(lambda: in_checkout(redis_url, event_id) == 0, what="every slot freed")
    assert all(r and r.status is Status.COMPLETED for r in records(redis_url, event_id, sids))
    assert b.terminate() == 0, b.log()
    assert handled_done(a.log()) > 0 and handled_done(b.log()) > 0
    assert handled_done(a.log()) + handled_done(b.log()) == n


def test_consumer_check_reports_fresh_stale_and_missing_heartbeats(
    sync_redis: redis.Redis, consumer_env: dict[str, str], consumers: Start
) -> None:
    assert waitroom(consumer_env, "consumer", "check").exit_code == RET_INVALID

    env = {**consumer_env, "WAITROOM_CONSUMER_REPLICA_ID": "replica-a"}
    consumer = consumers(env)
    wait_until(lambda: waitroom(env, "consumer", "check").exit_code == RET_OK, what="a heartbeat")
    mine = waitroom(env, "consumer", "check", "--replica", "replica-a", "--json")
    assert mine.exit_code == RET_OK
    (beat,) = json.loads(mine.stdout)["replicas"]
    assert json.loads(mine.stdout)["healthy"] is True
    assert beat["replica"] == "replica-a" and beat["fresh"] and "handled" in beat
    assert beat["max_age_seconds"] == 15.0  # three of its 5 s heartbeats
    assert waitroom(env, "consumer", "check", "--replica", "other").exit_code == RET_INVALID

    assert consumer.terminate() == 0  # a clean exit removes the heartbeat at once
    assert waitroom(env, "consumer", "check").exit_code == RET_INVALID

    stale = json.dumps({"ts": int((time.time() - 3600) * 1000), "handled": {}})
    sync_redis.hset(keys.CONSUMER_HEARTBEATS, "replica-old", stale)
    assert waitroom(env, "consumer", "check").exit_code == RET_INVALID
    assert waitroom(env, "consumer", "check", "--max-age", "7200").exit_code == RET_OK

    unreachable = {**env, "WAITROOM_REDIS_URL": "redis://127.0.0.1:1/0"}
    assert waitroom(unreachable, "consumer", "check").exit_code == RET_CONNECT


def test_bad_settings_and_bad_cli_input_exit_with_named_codes(
    consumer_env: dict[str, str],
) -> None:
    bad = {**consumer_env, "WAITROOM_CONSUMER_MAX_MESSAGE_BYTES": "lots"}
    result = waitroom(bad, "consumer")
    assert result.exit_code == RET_SETTINGS
    assert "WAITROOM_CONSUMER_MAX_MESSAGE_BYTES" in result.stderr
    no_kafka = {**consumer_env, "WAITROOM_KAFKA_BOOTSTRAP_SERVERS": ""}
    assert waitroom(no_kafka, "consumer").exit_code == RET_SETTINGS

    result = waitroom(consumer_env, "checkout", "complete", "not-a-session-id")
    assert result.exit_code == RET_ERROR and "WTR001" in result.stderr
    dead_broker = {**consumer_env, "WAITROOM_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    args = ["checkout", "fail", "whatever", "--event-id", "ev", "--user-id", "u"]
    assert waitroom(dead_broker, *args).exit_code == RET_CONNECT


@contextlib.contextmanager
def wedged_broker() -> Iterator[str]:
    """An address that accepts connections and never answers, so the consumer hangs in its
    Kafka calls and a drain cannot finish."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield f"127.0.0.1:{server.getsockname()[1]}"


@pytest.mark.parametrize("how", ["second signal", "grace overrun"])
def test_a_stop_that_cannot_drain_exits_with_the_forced_code(
    how: str, consumer_env: dict[str, str], consumers: Start
) -> None:
    """The same forced-exit code as the API and the admitter (shared.signals)."""
    with wedged_broker() as bootstrap:
        grace = "120" if how == "second signal" else "2"
        env = {
            **consumer_env,
            "WAITROOM_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "WAITROOM_CONSUMER_GRACE_SECONDS": grace,
        }
        consumer = consumers(env)
        wait_until(lambda: "starting in group" in consumer.log(), what="the consumer to start")
        assert consumer.proc is not None
        consumer.proc.send_signal(signal.SIGTERM)
        if how == "second signal":
            time.sleep(0.5)
            assert consumer.running, consumer.log()  # draining: its Kafka call is stuck
            consumer.proc.send_signal(signal.SIGINT)
        assert consumer.proc.wait(60) == RET_FORCED, consumer.log()
    expected = "SIGINT again" if how == "second signal" else "shutdown took longer than 2s"
    assert f"{expected}: exiting at once (exit {RET_FORCED})" in consumer.log()
