"""Fetching the next batch while the one in hand is in Redis keeps the commit-after-Redis rule:
nothing is committed beyond the batches applied, even with Redis paused mid-stream, and a
partition given up while its batch is in hand is never committed by this replica."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
from consumer_support import (
    FakeKafka,
    Topics,
    admitted_sessions,
    outcome,
    records_of,
    wait_until,
)
from kafka.structs import TopicPartition as TP

from shared import keys
from shared.ids import ticket_of_session
from shared.kafka import ensure_topics
from shared.settings import CommonSettings, ConsumerSettings, KafkaClientSettings
from waitroom_consumer.broker import Broker
from waitroom_consumer.worker import Consumer

# --- the lease fence, without a broker (a stand-in for kafka-python's consumer) -------------


def test_a_partition_revoked_while_its_batch_is_in_hand_is_not_committed_for_it() -> None:
    broker = Broker(CommonSettings(), KafkaClientSettings(), ConsumerSettings())
    kafka = FakeKafka()
    broker._consumer = kafka
    kept, moved = TP("t", 0), TP("t", 1)

    kafka.next = {kept: records_of(kept, range(0, 3)), moved: records_of(moved, range(0, 2))}
    in_hand = broker._poll(0)
    # The next poll, made while that batch is in Redis, runs a rebalance: `moved` goes away
    # (the listener commits what was handled before: nothing of this batch yet).
    assert broker.release([moved]) == {}
    broker.handled(in_hand)
    assert broker.pending == {("t", 0): 3}
    assert broker.stale == 2

    # Given back to us, it is held under a new lease: its replayed records count again, the
    # batch fetched under the old one still does not.
    kafka.next = {moved: records_of(moved, range(0, 4))}
    replayed = broker._poll(0)
    broker.handled(in_hand)
    assert broker.pending == {("t", 0): 3}
    broker.handled(replayed)
    assert broker.pending == {("t", 0): 3, ("t", 1): 4}

    # Lost (no revoke) or the clients rebuilt: nothing of the batch in hand is recorded either.
    kafka.next = {kept: records_of(kept, range(3, 5))}
    second = broker._poll(0)
    assert broker.release([kept]) == {("t", 0): 3}
    broker.handled(second)
    assert broker.pending == {("t", 1): 4}
    kafka.next = {moved: records_of(moved, range(4, 6))}
    third = broker._poll(0)
    with broker._lock:
        broker.pending.clear()
        broker.leases.clear()  # what reset() does
    broker.handled(third)
    assert broker.pending == {}


# --- a real consumer, Redis paused mid-stream ---------------------------------------------------


@contextlib.contextmanager
def running(consumer: Consumer) -> Iterator[Callable[[], None]]:
    """The consumer on its own event loop in a thread; stopped as SIGTERM would, at the end
    or earlier through the function it yields."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(
        target=lambda: loop.run_until_complete(consumer.run(handle_signals=False)), daemon=True
    )
    thread.start()

    def stop() -> None:
        loop.call_soon_threadsafe(consumer.stop)

    try:
        yield stop
    finally:
        stop()
        thread.join(30)
        loop.close()
    assert not thread.is_alive()


def in_process(common: CommonSettings, topics: Topics) -> Consumer:
    """A consumer of this test's topics with the short group timeouts the broker needs."""
    settings = ConsumerSettings(
        group=topics.group,
        topic_completed=topics.completed,
        topic_failed=topics.failed,
        topic_expired=topics.expired,
        dlq_topic=topics.dlq,
    )
    tuning = KafkaClientSettings(
        session_timeout_ms=2000, heartbeat_interval_ms=600, fetch_max_wait_ms=50
    )
    return Consumer(common, tuning, settings)


def produce_located(bootstrap: str, records: list[tuple[str, bytes, bytes]]) -> list[Any]:
    """Produce in order; returns each record's (partition, offset) as Kafka acknowledged it."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=[bootstrap], acks="all", linger_ms=5)
    try:
        futures = [producer.send(t, key=k, value=v) for t, k, v in records]
        producer.flush(30)
        return [f.get(30) for f in futures]
    finally:
        producer.close(5)


class Committed:
    """The group's committed offsets, read as another client would."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.reader = KafkaConsumer(bootstrap_servers=[bootstrap], group_id=group)
        self.parts = [TopicPartition(topic, p) for p in range(partitions)]

    def read(self) -> dict[int, int]:
        return {tp.partition: self.reader.committed(tp) or 0 for tp in self.parts}

    def close(self) -> None:
        self.reader.close(autocommit=False)


PARTS = 4


def outcomes_ready(
    redis_url: str, bootstrap: str, event_id: str, topics: Topics, n: int
) -> tuple[CommonSettings, list[str], list[tuple[str, bytes, bytes]]]:
    """``n`` sessions in checkout, this test's topics, and an outcome for each session keyed
    by its id, so every partition carries a share."""
    sids, _ = admitted_sessions(redis_url, event_id, admitted=n)
    common = CommonSettings(redis_url=redis_url, kafka_bootstrap_servers=bootstrap)
    names = [topics.completed, topics.failed, topics.expired, topics.dlq]
    ensure_topics(common, dict.fromkeys(names, PARTS), explicit=True)
    sent = [
        (topics.completed, s.encode(), outcome("checkout.completed", s, event_id)) for s in sids
    ]
    return common, sids, sent


def test_redis_paused_mid_stream_commits_nothing_beyond_the_batches_applied(
    redis_url: str, sync_redis: redis.Redis, bootstrap: str, event_id: str, topics: Topics
) -> None:
    n = 4000
    common, sids, sent = outcomes_ready(redis_url, bootstrap, event_id, topics, n)
    tickets: dict[tuple[int, int], int] = {}

    def flow() -> None:
        for i in range(0, n, 200):
            chunk = produce_located(bootstrap, sent[i : i + 200])
            for meta, sid in zip(chunk, sids[i : i + 200], strict=True):
                tickets[(meta.partition, meta.offset)] = ticket_of_session(sid)
            time.sleep(0.05)

    def applied() -> set[int]:
        """Tickets whose outcome is in Redis (a read: allowed while writes are paused)."""
        scores = sync_redis.zrange(keys.done(event_id), 0, -1)
        return {int(t) for t in scores}

    def check(committed: dict[int, int]) -> int:
        """Every record below a committed offset is applied; returns how many are committed."""
        done = applied()
        for (partition, offset), ticket in list(tickets.items()):
            if offset < committed[partition]:
                assert ticket in done, f"committed past {partition}@{offset}, not applied"
        return sum(committed.values())

    consumer = in_process(common, topics)
    reader = Committed(bootstrap, topics.group, topics.completed, PARTS)
    producer = threading.Thread(target=flow)
    try:
        with running(consumer):
            producer.start()
            wait_until(lambda: len(applied()) >= 400, what="the stream under way")
            # Pause every write for 3 s: the batch in hand waits in Redis, the next is fetched.
            sync_redis.client_pause(3000, all=False)
            paused_at = time.monotonic()
            during: list[tuple[int, int, int]] = []
            while time.monotonic() - paused_at < 2.5:
                ahead = consumer.fetched - consumer.batches
                during.append((check(reader.read()), len(applied()), ahead))
                time.sleep(0.1)
            wait_until(lambda: len(applied()) == n, what="every outcome applied after the pause")
            producer.join()
            wait_until(lambda: check(reader.read()) >= n - 500, what="commits to catch up")
        assert check(reader.read()) == n  # the shutdown commits the last batch
    finally:
        if producer.ident is not None:  # started
            producer.join()
        reader.close()
    committed_during = {c for c, _, _ in during}
    applied_during = {a for _, a, _ in during}
    assert len(applied_during) == 1, "writes were paused: nothing can have been applied"
    assert max(committed_during) <= min(applied_during)
    # The overlap was at work: a batch beyond the one in hand had been fetched meanwhile.
    assert max(ahead for _, _, ahead in during) == 2


def test_a_stop_with_redis_paused_finishes_the_batch_in_hand_and_not_the_one_fetched(
    redis_url: str, sync_redis: redis.Redis, bootstrap: str, event_id: str, topics: Topics
) -> None:
    n = 3000
    common, _, sent = outcomes_ready(redis_url, bootstrap, event_id, topics, n)
    produce_located(bootstrap, sent)
    consumer = in_process(common, topics)
    reader = Committed(bootstrap, topics.group, topics.completed, PARTS)
    sync_redis.client_pause(60_000, all=False)  # every write waits until unpaused
    try:
        with running(consumer) as stop:
            # The first batch waits in Redis; the second is fetched and waits for it.
            wait_until(lambda: consumer.fetched == 2, what="a batch fetched ahead")
            stop()  # SIGTERM
            time.sleep(1.0)  # the loop sees the stop; nothing can be applied yet
            assert sync_redis.zcard(keys.done(event_id)) == 0
            assert sum(reader.read().values()) == 0
            sync_redis.client_unpause()
        applied = int(sync_redis.zcard(keys.done(event_id)))
        committed = sum(reader.read().values())
    finally:
        sync_redis.client_unpause()
        reader.close()
    # The batch in hand finished and was committed; the one fetched ahead was neither applied
    # nor committed: the next owner gets it.
    assert consumer.batches == 1 and consumer.fetched == 2
    assert applied == consumer.messages == committed
    assert 0 < applied < n
