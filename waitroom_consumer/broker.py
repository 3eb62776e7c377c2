"""The Kafka side of the consumer: one kafka-python consumer and one producer (dead letters).

kafka-python is blocking and its consumer is not thread-safe, so every call on either client goes
through one ``KafkaThread`` (``shared.kafka``); the asyncio loop awaits it. The consumer's rebalance
listener runs inside ``poll()`` (on the client's own IO thread while our thread waits for ``poll``
to return). The worker polls the next batch while the one in hand is applied to Redis, so a
rebalance can happen while a batch is in hand: each batch carries the lease of its partitions
(``Batch.leases``), a revoke or a loss ends those leases, and ``handled`` records offsets only
under a lease still held. A revoked partition's offsets are committed by the listener at the
revoke and never after it: the new owner replays what was in hand (``finish`` is idempotent).

Kafka also holds what Redis may lose: a Redis server that restarted or was promoted can lack the
last outcomes the one before it acknowledged, though their offsets are committed. The broker
remembers, per partition, where the last ``WAITROOM_CONSUMER_REPLAY_SECONDS`` of handled
messages began (``history``), and ``rewind`` seeks back there and commits that position, so
those outcomes are applied again (a crash during the replay replays them too). A batch in hand
or fetched ahead at a rewind is still applied, but its offsets of a rewound partition are not
recorded: the replay covers them.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from shared.kafka import (
    TOPIC_PARTITIONS,
    KafkaThread,
    Record,
    bootstrap_servers,
    ensure_topics,
    kafka_consumer,
    kafka_producer,
    probe_kafka,
    send_and_wait,
)
from shared.settings import CommonSettings, ConsumerSettings, KafkaClientSettings

T = TypeVar("T")
log = logging.getLogger("waitroom.consumer")


class Message(NamedTuple):
    """One consumed record, copied out of kafka-python's untyped record.

    A NamedTuple: built once per message, it costs a quarter of a frozen dataclass (0.17
    against 0.70 us measured here).
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = -1  # the record's own time; -1 (Kafka's "none") if it has none


@dataclass(frozen=True, slots=True)
class Batch:
    """What one poll returned, in partition order, with the lease under which each of its
    partitions was held when it was fetched (see ``Broker.handled``)."""

    messages: list[Message]
    leases: dict[tuple[str, int], int]

    def __len__(self) -> int:
        return len(self.messages)


class Broker:
    """The consumer's Kafka clients, used only from one thread, with its handled offsets.

    ``pending`` maps (topic, partition) to the next offset to commit: everything below it has
    been handled (its Redis change or dead letter is done) but not yet committed. ``leases``
    maps each partition this replica holds to a number that changes whenever it is given up
    (revoked, lost, or the clients rebuilt) and taken again, so work fetched under an older
    holding is never committed.
    """

    def __init__(
        self, common: CommonSettings, tuning: KafkaClientSettings, settings: ConsumerSettings
    ) -> None:
        self.common = common
        self.tuning = tuning
        self.settings = settings
        self.topics = [settings.topic_completed, settings.topic_failed, settings.topic_expired]
        self.pending: dict[tuple[str, int], int] = {}
        self.leases: dict[tuple[str, int], int] = {}
        self._lease_numbers = itertools.count(1)
        # Per partition: (monotonic time, first offset handled then), at most one a second,
        # going back one entry past the replay window.
        self.history: dict[tuple[str, int], deque[tuple[float, int]]] = {}
        self._lock = threading.Lock()
        self._thread = KafkaThread()
        self._consumer: Any = None
        self._producer: Any = None
        self.commits = 0
        self.revoked = 0
        self.lost = 0
        self.stale = 0  # handled messages not recorded: their partition moved while in hand

    def __repr__(self) -> str:
        return (
            f"Broker(group={self.settings.group!r}, connected={self.connected}, "
            f"pending={len(self.pending)}, commits={self.commits}, revoked={self.revoked}, "
            f"lost={self.lost}, stale={self.stale})"
        )

    @property
    def connected(self) -> bool:
        return self._consumer is not None

    async def _call(self, func: Callable[..., T], *args: Any) -> T:
        return await self._thread.call(functools.partial(func, *args))

    # --- connecting ---------------------------------------------------------------------------

    async def connect(self) -> None:
        """Create the topics if needed, join the group and open the dead-letter producer."""
        await self._call(self._connect)

    def _connect(self) -> None:
        probe_kafka(bootstrap_servers(self.common))
        wanted = dict.fromkeys([*self.topics, self.settings.dlq_topic], TOPIC_PARTITIONS)
        try:
            created = ensure_topics(self.common, wanted)
            if created:
                log.info("created topics %s", ", ".join(created))
        except Exception as exc:  # a broker may forbid topic creation; consuming still works
            log.warning("could not create topics (%s); they must exist already", exc)
        consumer = kafka_consumer(self.common, self.tuning, self.settings)
        try:
            producer = kafka_producer(
                self.common, self.tuning, client_id=f"{self.settings.group}-dead-letters"
            )
        except Exception:
            consumer.close(autocommit=False, timeout_ms=1000)
            raise
        consumer.subscribe(self.topics, listener=_make_listener(self, consumer))
        self._consumer, self._producer = consumer, producer
        log.info("subscribed to %s in group %s", ", ".join(self.topics), self.settings.group)

    # --- consuming ----------------------------------------------------------------------------

    async def poll(self, timeout_ms: int) -> Batch:
        """The next records, in partition order (all of one partition, then the next)."""
        return await self._call(self._poll, timeout_ms)

    def _poll(self, timeout_ms: int) -> Batch:
        batches = self._consumer.poll(timeout_ms=timeout_ms)
        # A poll returns records only of partitions the consumer holds now, so each of them is
        # held under the current lease, or a new one if this is the first batch since taking it.
        with self._lock:
            leases = {
                (tp.topic, tp.partition): self.leases.setdefault(
                    (tp.topic, tp.partition), next(self._lease_numbers)
                )
                for tp in batches
            }
        messages = [
            Message(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp)
            for records in batches.values()
            for r in records
        ]
        return Batch(messages, leases)

    def handled(self, batch: Batch) -> None:
        """Mark a batch's messages as done, so the next commit covers them; those of a
        partition given up since the batch was fetched are left out (its new owner replays
        them)."""
        now = time.monotonic()
        first: dict[tuple[str, int], int] = {}
        with self._lock:
            for m in batch.messages:
                tp = (m.topic, m.partition)
                if self.leases.get(tp) == batch.leases.get(tp):
                    first.setdefault(tp, m.offset)
                    self.pending[tp] = m.offset + 1
                else:
                    self.stale += 1
            for tp, offset in first.items():
                self._remember(tp, offset, now)

    def _remember(self, tp: tuple[str, int], offset: int, now: float) -> None:
        """Note where the messages handled from ``now`` on begin (under ``_lock``)."""
        marks = self.history.setdefault(tp, deque())
        if not marks or marks[-1][0] <= now - 1.0:
            marks.append((now, offset))
        _forget(marks, now - self.settings.replay_seconds)

    async def rewind(self) -> dict[tuple[str, int], int]:
        """Seek each held partition back to where the messages handled in the last
        ``replay_seconds`` began, and make that position the next commit; returns the
        positions. The batches in hand and fetched ahead no longer record offsets of those
        partitions (the replay covers them); a partition with nothing handled in the window
        is left where it is, its batches recorded as before."""
        return await self._call(self._rewind)

    def _rewind(self) -> dict[tuple[str, int], int]:
        from kafka.structs import TopicPartition

        since = time.monotonic() - self.settings.replay_seconds
        with self._lock:
            targets = {}
            for tp, marks in self.history.items():
                _forget(marks, since)
                if tp in self.leases and marks:
                    targets[tp] = marks[0][1]
                    self.leases[tp] = next(self._lease_numbers)
                    self.pending[tp] = marks[0][1]
        if self._consumer is not None:
            for (topic, partition), offset in targets.items():
                self._consumer.seek(TopicPartition(topic, partition), offset)
        return targets

    async def commit(self) -> int:
        """Commit every handled offset; returns how many partitions were committed."""
        return await self._call(self._commit)

    def _commit(self) -> int:
        with self._lock:
            offsets = dict(self.pending)
        if not offsets or self._consumer is None:
            return 0
        self._consumer.commit(_kafka_offsets(offsets), timeout_ms=self.tuning.request_timeout_ms)
        with self._lock:
            for tp, offset in offsets.items():
                if self.pending.get(tp) == offset:
                    del self.pending[tp]
        self.commits += 1
        return len(offsets)

    def release(self, partitions: Iterable[Any]) -> dict[tuple[str, int], int]:
        """End the leases of ``partitions`` (TopicPartition objects) and remove and return
        their pending offsets: from now on nothing handled under those leases is recorded."""
        taken = {}
        with self._lock:
            for tp in partitions:
                key = (tp.topic, tp.partition)
                self.leases.pop(key, None)
                self.history.pop(key, None)
                offset = self.pending.pop(key, None)
                if offset is not None:
                    taken[key] = offset
        return taken

    async def lag(self) -> dict[str, int]:
        """Messages not yet committed per topic, over the partitions this replica holds."""
        return await self._call(self._lag)

    def _lag(self) -> dict[str, int]:
        lag = dict.fromkeys(self.topics, 0)
        consumer = self._consumer
        if consumer is None:
            return lag
        partitions = list(consumer.assignment())
        if not partitions:
            return lag
        # One ListOffsets request; committed offsets are the client's cached ones. A partition
        # the group never committed counts from its first offset (the group starts there).
        ends = consumer.end_offsets(partitions)
        committed = {tp: consumer.committed(tp) for tp in partitions}
        never = [tp for tp, offset in committed.items() if offset is None]
        starts = consumer.beginning_offsets(never) if never else {}
        for tp in partitions:
            done = committed[tp] if committed[tp] is not None else starts.get(tp, 0)
            # What we fetched exists, so our position is a floor for the end: the Tansu broker
            # answers "latest" with the last batch's first offset (2 for five records in two
            # batches, measured), real Kafka with the true end.
            end = max(ends.get(tp, 0), consumer.position(tp) or 0)
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, end - done)
        return lag

    # --- producing ----------------------------------------------------------------------------

    async def produce(self, records: list[Record]) -> None:
        """Produce the records and wait until Kafka acknowledged them all."""
        await self._call(self._produce, records)

    def _produce(self, records: list[Record]) -> None:
        send_and_wait(self._producer, records, self.tuning.request_timeout_ms / 1000)

    # --- closing ------------------------------------------------------------------------------

    async def close(self) -> None:
        """Commit what was handled, leave the group and close both clients."""
        try:
            await self._call(self._close)
        finally:
            self._thread.close()

    async def reset(self) -> None:
        """Drop both clients after repeated failures; ``connect`` builds new ones.

        Offsets still pending are dropped too: the next owner replays those messages.
        """
        try:
            await self._call(self._close)
        except Exception as exc:
            log.warning("closing the broken Kafka clients failed: %s", exc)
        with self._lock:
            self.pending.clear()
            self.leases.clear()

    def _close(self) -> None:
        consumer, producer = self._consumer, self._producer
        self._consumer = self._producer = None
        timeout_ms = self.tuning.request_timeout_ms
        if consumer is not None:
            # close() revokes our partitions first, so the listener commits what is pending.
            consumer.close(autocommit=False, timeout_ms=timeout_ms)
        if producer is not None:
            producer.close(timeout=timeout_ms / 1000)


def _forget(marks: deque[tuple[float, int]], since: float) -> None:
    """Drop the marks before ``since`` but the newest of them: messages handled after
    ``since`` may have begun at that one (marks are at most one a second)."""
    while len(marks) > 1 and marks[1][0] <= since:
        marks.popleft()


def _kafka_offsets(offsets: dict[tuple[str, int], int]) -> dict[Any, Any]:
    from kafka.structs import OffsetAndMetadata, TopicPartition

    return {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}


def _make_listener(broker: Broker, consumer: Any) -> Any:
    """A rebalance listener that commits handled offsets before partitions move away.

    It is async because it runs on kafka-python's IO thread, where a blocking ``commit()``
    is refused; awaiting the commit future there keeps heartbeats flowing.
    """
    from kafka import AsyncConsumerRebalanceListener

    class Listener(AsyncConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: Any) -> None:
            broker.revoked += 1
            offsets = broker.release(revoked)
            if not offsets:
                return
            try:
                await consumer.commit_async(_kafka_offsets(offsets))
                broker.commits += 1
                log.info("committed %d partitions before giving them up", len(offsets))
            except Exception as exc:  # the new owner replays them; handling is idempotent
                log.warning("commit before rebalance failed (%s); messages will be replayed", exc)

        async def on_partitions_assigned(self, assigned: Any) -> None:
            log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))

        async def on_partitions_lost(self, lost: Any) -> None:
            # We were dropped from the group (no commit possible): the new owner replays.
            broker.lost += 1
            dropped = broker.release(lost)
            log.warning(
                "lost %d partitions; %d uncommitted will be replayed", len(lost), len(dropped)
            )

    return Listener()
