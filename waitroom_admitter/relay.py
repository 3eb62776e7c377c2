"""The outbox relay: moves each owned event's outbox records to Kafka, at least once.

The Lua scripts record every Kafka message in the event's outbox stream in the same atomic
step as the change it reports. The relay reads a batch, produces every message (acks=all,
idempotent producer), waits for every acknowledgement, and only then deletes the batch from the
stream. A relay that dies in between leaves the records for the next one; consumers drop the
repeats by ``message_id``. While Kafka is down nothing is deleted, so the outbox grows, and it
drains when Kafka returns.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Collection
from typing import Any

from redis.asyncio import Redis

from shared import keys, messages, metrics, outbox
from shared.backoff import Outage, bug, compute_backoff, is_transient, pause
from shared.kafka import (
    TOPIC_PARTITIONS,
    KafkaThread,
    Record,
    abandon,
    bootstrap_servers,
    ensure_topics,
    kafka_producer,
    probe_kafka,
    send_and_wait,
)
from shared.settings import CommonSettings, KafkaClientSettings
from shared.timefmt import format_ms_precise
from shared.token import Signer
from waitroom_admitter.guard import RecoveryGuard

log = logging.getLogger(__name__)


def entry_ms(entry: outbox.OutboxEntry) -> int:
    """When an entry was recorded: a stream id's first part is Redis's time in ms."""
    return int(entry.entry_id.split(b"-", 1)[0])


class Relay:
    """Relays the outboxes of the events this replica owns, one batch at a time."""

    def __init__(
        self,
        redis: Redis,
        common: CommonSettings,
        tuning: KafkaClientSettings,
        *,
        batch: int,
        client_id: str,
        owned: Callable[[], Collection[str]],
        redis_outage: Outage,
        dead_letter_topic: str,
        signer: Signer,
        guard: RecoveryGuard | None = None,
    ) -> None:
        self.redis = redis
        self.guard = guard
        self.common = common
        self.tuning = tuning
        self.batch = batch
        self.client_id = client_id
        self.owned = owned
        self.redis_outage = redis_outage
        self.dead_letter_topic = dead_letter_topic
        self.kafka_outage = Outage("Kafka", log, dependency="kafka")
        # The HS256 secret, or the keyring when WAITROOM_JWT_KEY_DIR is set.
        self.secret = signer
        self._thread = KafkaThread()
        self._producer: Any = None
        self._dirty: set[str] = set()
        self._kick = asyncio.Event()
        self.relayed = 0
        self.batches = 0
        self.failures = 0
        self.dead_letters = 0
        self.errors = 0

    def kick(self, event_id: str) -> None:
        """The event's outbox has new records: relay them soon."""
        self._dirty.add(event_id)
        self._kick.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Relay until ``stopping`` is set; a batch in hand is finished first."""
        self._kick.set()  # connect, and so create the topics, before the first record
        while not stopping.is_set():
            waiter = asyncio.ensure_future(self._kick.wait())
            stopper = asyncio.ensure_future(stopping.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if stopping.is_set():
                return
            self._kick.clear()
            if self._producer is None:
                delay = await self._connect()
                if delay is not None:
                    self._kick.set()
                    await pause(stopping, delay)
                    continue
            pending, self._dirty = self._dirty, set()
            # Only the kicked events are looked up: a set of every owned event per pass cost
            # 3 ms a pass with 10,000 events (docs/benchmarks.md, "Many events").
            owned = self.owned()
            ready = [e for e in pending if e in owned]
            if self.guard is not None:
                # Not yet checked against Kafka: the guard kicks it once it is.
                ready = [e for e in ready if self.guard.relayable(e)]
            for event_id in sorted(ready):
                if stopping.is_set():
                    return
                try:
                    delay = await self._drain(event_id, stopping)
                except Exception as exc:
                    if is_transient(exc):  # Redis went away between two of the batch's calls
                        delay = self.redis_outage.failed(exc)
                    else:
                        # A bug or an unreadable record must not end the relay for every event.
                        bug(log, "relay", exc, event_id)
                        delay = compute_backoff(self.errors)
                        self.errors += 1
                if delay is not None:
                    # Keep every event not yet relayed for the retry after the pause.
                    self._dirty |= pending
                    self._kick.set()
                    await pause(stopping, delay)
                    break

    async def flush(self, events: Collection[str]) -> None:
        """Relay what the events' outboxes hold now, without retrying (used at shutdown, so a
        replica that stops hands over an empty outbox when Kafka is up)."""
        if self._producer is None:
            return  # Kafka was down when last tried: leave the records to the next owner
        never = asyncio.Event()
        for event_id in sorted(events):
            if self.guard is not None and not self.guard.relayable(event_id):
                continue
            try:
                if await self._drain(event_id, never) is not None:
                    return
            except Exception as exc:  # the records stay in the outbox for the next owner
                bug(log, "relay", exc, event_id)
                return

    async def _drain(self, event_id: str, stopping: asyncio.Event) -> float | None:
        """Relay the event's outbox until it is empty; a pause before retrying on failure."""
        while True:
            try:
                entries = await outbox.read(self.redis, event_id, self.batch)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                return self.redis_outage.failed(exc)
            await self.redis_outage.succeeded()
            if not entries:
                metrics.OUTBOX_BACKLOG.labels(event_id).set(0)
                return None
            extra, mark = None, None
            if self.guard is not None:
                prepared = await self.guard.prepare(event_id, entries)
                if prepared is None:
                    return None  # Redis changed server: the guard checks it first
                extra, mark = prepared
            try:
                produce = functools.partial(self._produce, event_id, entries, extra)
                dead = await self._thread.call(produce)
            except Exception as exc:
                # Any failure, whatever kafka-python raises, leaves the batch in the outbox.
                self.failures += 1
                await self._discard_producer()
                return self.kafka_outage.failed(exc)
            self.kafka_outage.recovered()
            if self.guard is not None and mark is not None:
                self.guard.relayed(mark)
            try:
                await outbox.acknowledge(self.redis, event_id, entries)
                backlog = await self.redis.xlen(keys.outbox(event_id))
            except Exception as exc:
                if not is_transient(exc):
                    raise
                # Kafka has the batch; the next relay sends it again and consumers dedupe.
                return self.redis_outage.failed(exc)
            self._count(entries, dead)
            metrics.OUTBOX_BACKLOG.labels(event_id).set(backlog)
            if len(entries) < self.batch or stopping.is_set():
                if backlog:
                    # Recorded while this batch was on its way: no wake-up announces them
                    # (join.lua announces only the first record of an idle outbox).
                    self.kick(event_id)
                return None

    def _count(self, entries: list[outbox.OutboxEntry], dead: int) -> None:
        self.batches += 1
        self.relayed += len(entries) - dead
        self.dead_letters += dead
        if dead:
            metrics.DEAD_LETTERS.labels("outbox").inc(dead)
        now_ms = time.time() * 1000
        for entry in entries:
            metrics.OUTBOX_RELAYED.labels(entry.topic).inc()
            metrics.RELAY_LAG.observe(max(0.0, now_ms - entry_ms(entry)) / 1000)

    async def _connect(self) -> float | None:
        """Open the producer; a pause before retrying when Kafka cannot be reached."""
        try:
            await self._thread.call(self._open)
        except Exception as exc:  # whatever kafka-python raises, retry later
            self.failures += 1
            return self.kafka_outage.failed(exc)
        return None

    def _open(self) -> None:
        """Create the produced topics and a producer (runs on the Kafka thread)."""
        # kafka-python waits up to 30 s to bootstrap from a dead address; a plain connect
        # finds out at once, so a retry during an outage costs milliseconds.
        probe_kafka(bootstrap_servers(self.common), min(self.tuning.request_timeout_ms / 1000, 2.0))
        topics = [*messages.PRODUCED_TOPICS, self.dead_letter_topic, messages.EVENTS_TOPIC]
        ensure_topics(self.common, dict.fromkeys(topics, TOPIC_PARTITIONS))
        # Created afresh after every failure: a broker that came back empty does not know the
        # old idempotent producer id, and a new one starts clean.
        self._producer = kafka_producer(self.common, self.tuning, client_id=self.client_id)

    def _produce(
        self, event_id: str, entries: list[outbox.OutboxEntry], extra: Record | None = None
    ) -> int:
        """Send a batch (and ``extra``, the event's watermark) and wait for every
        acknowledgement (runs on the Kafka thread).

        Returns how many entries went to the dead-letter topic instead.
        """
        if self._producer is None:
            self._open()
        now_ms = int(time.time() * 1000)
        # The old service's records carried a `timestamp` header (RFC 3339): consumers that
        # read it rather than the body still find it.
        stamp = ("timestamp", format_ms_precise(now_ms).encode("ascii"))
        records: list[Record] = []
        dead = 0
        for entry in entries:
            try:
                message = outbox.to_message(entry, self.secret, now_ms)
            except (KeyError, ValueError, TypeError) as exc:
                message = self._dead_letter(event_id, entry, exc)
                dead += 1
            header = (messages.MESSAGE_ID_HEADER, message.message_id.encode("utf-8"))
            records.append((message.topic, message.key, message.value, [header, stamp]))
        if extra is not None:
            records.append(extra)
        send_and_wait(self._producer, records, self.tuning.request_timeout_ms / 1000)
        return dead

    def _dead_letter(
        self, event_id: str, entry: outbox.OutboxEntry, error: Exception
    ) -> messages.OutgoingMessage:
        """A record that cannot become its message (written by a newer or broken script) goes
        to the dead-letter topic whole, so it neither blocks the outbox nor disappears."""
        log.error("outbox record %s of %s is unreadable: %r", entry.entry_id, event_id, error)
        body = {
            "source": "outbox",
            "topic": entry.topic,
            "entry_id": entry.entry_id.decode(),
            "fields": entry.fields,
            "error": repr(error),
        }
        return messages.encode(self.dead_letter_topic, event_id, entry.message_id, body)

    async def _discard_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await self._thread.call(functools.partial(abandon, producer))
            except Exception as exc:  # it is dropped either way
                log.debug("closing the Kafka producer failed: %s", exc)

    async def close(self) -> None:
        """Close the producer (sending what it holds, briefly) and end the Kafka thread."""
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await asyncio.wait_for(self._thread.call(lambda: producer.close(timeout=1)), 2)
            except Exception as exc:
                log.debug("closing the Kafka producer failed: %s", exc)
        self._thread.close()

    def __repr__(self) -> str:
        return (
            f"Relay(relayed={self.relayed}, batches={self.batches}, failures={self.failures}, "
            f"dead_letters={self.dead_letters}, errors={self.errors}, "
            f"pending={len(self._dirty)}, {self.kafka_outage!r})"
        )
