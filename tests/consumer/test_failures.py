"""Crashes and outages: nothing is skipped, nothing is applied twice in effect, nothing crashes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis
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
from shared.sessions import Status
from waitroom_dev.services import broker_service, free_port, redis_service

Start = Callable[[dict[str, str]], ConsumerProcess]


def completions(topics: Topics, event_id: str, sids: list[str]) -> list[tuple[str, bytes, bytes]]:
    # Keyed by session here (not by event, as the order service does) to use every partition.
    return [
        (topics.completed, sid.encode(), outcome("checkout.completed", sid, event_id))
        for sid in sids
    ]


def all_completed(redis_url: str, event_id: str, sids: list[str]) -> bool:
    return all(
        r is not None and r.status is Status.COMPLETED for r in records(redis_url, event_id, sids)
    )


def loaded(url: str) -> bool:
    client = redis.Redis.from_url(url)
    try:
        return bool(client.ping())
    except redis.BusyLoadingError:
        return False
    finally:
        client.close()


def test_sigkill_while_messages_flow_then_restart_handles_each_once_and_skips_none(
    redis_url: str,
    sync_redis: redis.Redis,
    bootstrap: str,
    event_id: str,
    topics: Topics,
    consumer_env: dict[str, str],
    consumers: Start,
) -> None:
    n = 400
    sids, _ = admitted_sessions(redis_url, event_id, admitted=n)
    messages = completions(topics, event_id, sids)

    killed = threading.Event()

    def flow() -> None:
        """Steady traffic; the last part only after the kill, so some is surely unhandled."""
        for i in range(100, n - 100, 20):
            produce(bootstrap, messages[i : i + 20])
            time.sleep(0.05)
        killed.wait(30)
        produce(bootstrap, messages[n - 100 :])

    first = consumers(consumer_env)
    produce(bootstrap, messages[:100])
    wait_until(lambda: in_checkout(redis_url, event_id) <= n - 100, what="the first 100")
    producer = threading.Thread(target=flow)
    producer.start()
    try:
        wait_until(lambda: in_checkout(redis_url, event_id) <= n - 150, what="150 handled")
        first.kill()
        killed.set()
        before = {
            sid: record
            for sid, record in zip(sids, records(redis_url, event_id, sids), strict=True)
            if record is not None and record.status is Status.COMPLETED
        }
    finally:
        killed.set()
        producer.join()
    assert len(before) < n

    consumers(consumer_env)
    wait_until(lambda: in_checkout(redis_url, event_id) == 0, what="every slot freed")
    assert all_completed(redis_url, event_id, sids)
    after = dict(zip(sids, records(redis_url, event_id, sids), strict=True))
    # Replayed messages (handled before the kill, never committed) changed nothing.
    assert {sid: after[sid] for sid in before} == before
    assert sync_redis.zcard(keys.done(event_id)) == n


def test_redis_stopped_for_seconds_mid_stream_pauses_consumption_and_skips_nothing(
    tmp_path: Path,
    bootstrap: str,
    event_id: str,
    topics: Topics,
    consumer_env: dict[str, str],
    consumers: Start,
) -> None:
    # Our own Redis on a fixed port, with AOF, so it comes back on the same address with state.
    port = free_port()
    service = redis_service(tmp_path, port, durable=True).start()
    try:
        url = f"redis://127.0.0.1:{port}/0"
        sids, _ = admitted_sessions(url, event_id, admitted=200)
        messages = completions(topics, event_id, sids)
        consumer = consumers({**consumer_env, "WAITROOM_REDIS_URL": url})
        produce(bootstrap, messages[:100])
        wait_until(lambda: in_checkout(url, event_id) == 100, what="the first half")

        service.stop()
        produce(bootstrap, messages[100:])
        time.sleep(3)
        assert consumer.running
        service.start()
        wait_until(lambda: loaded(url), what="Redis to load its append-only file")

        wait_until(lambda: in_checkout(url, event_id) == 0, what="the second half")
        assert all_completed(url, event_id, sids)
        assert consumer.running
        log = consumer.log()
        assert log.count("Redis unavailable") == 1, log  # once per outage, not per attempt
        assert log.count("Redis available again") == 1, log
    finally:
        service.stop()


def test_a_broker_restart_is_waited_out_and_consumption_resumes(
    tmp_path: Path,
    redis_url: str,
    event_id: str,
    topics: Topics,
    consumer_env: dict[str, str],
    consumers: Start,
) -> None:
    port = free_port()
    broker = broker_service(tmp_path, port).start()
    try:
        bootstrap = f"127.0.0.1:{port}"
        sids, _ = admitted_sessions(redis_url, event_id, admitted=20)
        messages = completions(topics, event_id, sids)
        consumer = consumers({**consumer_env, "WAITROOM_KAFKA_BOOTSTRAP_SERVERS": bootstrap})
        produce(bootstrap, messages[:10])
        wait_until(lambda: in_checkout(redis_url, event_id) == 10, what="the first half")

        broker.stop()
        time.sleep(3)
        assert consumer.running
        broker.start()  # this broker keeps nothing: topics and offsets start empty
        produce(bootstrap, messages[10:])

        wait_until(lambda: in_checkout(redis_url, event_id) == 0, what="the second half")
        assert all_completed(redis_url, event_id, sids)
        assert consumer.running
    finally:
        broker.stop()
