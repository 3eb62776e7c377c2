"""Kafka, the same way in every process: the clients, the topics, and where blocking calls run.

kafka-python is blocking and its clients are not thread-safe. Every process therefore runs all
of one client's calls on one ``KafkaThread`` (a daemon thread: a call stuck on an unreachable
broker can never keep the process from exiting, where a pool thread would be joined at exit),
and awaits them from asyncio. Before building a client, ``probe_kafka`` makes a plain TCP
connect: kafka-python spends 30 s trying to bootstrap from a dead broker (and leaves a thread
behind each time), so a retry during an outage stays fast and clean.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from shared import messages
from shared.settings import CommonSettings, ConsumerSettings, KafkaClientSettings

T = TypeVar("T")

#: Partitions of the topics a process creates when they do not exist yet. Messages are keyed by
#: event id, so this bounds how many consumers can share one topic.
TOPIC_PARTITIONS = 4

#: How long the TCP probe waits for each bootstrap server.
PROBE_SECONDS = 2.0

#: A record to produce: (topic, key, value, headers).
Record = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]


def bootstrap_servers(settings: CommonSettings) -> list[str]:
    """The ``host:port`` entries of WAITROOM_KAFKA_BOOTSTRAP_SERVERS."""
    return [s.strip() for s in settings.kafka_bootstrap_servers.split(",") if s.strip()]


class KafkaUnreachable(ConnectionError):
    """No bootstrap server accepted a TCP connection."""


def probe_kafka(addresses: Iterable[str], timeout: float = PROBE_SECONDS) -> None:
    """Raise KafkaUnreachable unless some bootstrap server accepts a TCP connection."""
    errors = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout):
                return
        except (OSError, ValueError) as exc:
            errors.append(f"{address}: {exc}")
    raise KafkaUnreachable("; ".join(errors) or "no bootstrap servers configured")


def kafka_producer(settings: CommonSettings, tuning: KafkaClientSettings, *, client_id: str) -> Any:
    """An idempotent producer waiting for all in-sync replicas (acks=all)."""
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=bootstrap_servers(settings),
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=tuning.linger_ms,
        batch_size=65536,
        request_timeout_ms=tuning.request_timeout_ms,
        max_block_ms=tuning.request_timeout_ms,
        retries=5,
    )


def kafka_consumer(
    settings: CommonSettings, tuning: KafkaClientSettings, consumer: ConsumerSettings
) -> Any:
    """A consumer in the waitroom's group: manual commits, starting from the earliest offset."""
    from kafka import KafkaConsumer

    return KafkaConsumer(
        bootstrap_servers=bootstrap_servers(settings),
        group_id=consumer.group,
        client_id=f"{consumer.group}-consumer",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=tuning.session_timeout_ms,
        heartbeat_interval_ms=tuning.heartbeat_interval_ms,
        fetch_max_wait_ms=tuning.fetch_max_wait_ms,
        request_timeout_ms=max(tuning.request_timeout_ms, tuning.session_timeout_ms + 5000),
        max_poll_records=500,
    )


def send_and_wait(producer: Any, records: Sequence[Record], timeout: float) -> None:
    """Produce every record and wait until Kafka acknowledged each (blocking: run it on the
    client's ``KafkaThread``). Raises what went wrong with the first record that failed."""
    futures = [
        producer.send(topic, key=key, value=value, headers=headers)
        for topic, key, value, headers in records
    ]
    producer.flush(timeout=timeout)
    for future in futures:
        future.get(timeout=timeout)


def ensure_topics(settings: CommonSettings, topics: dict[str, int]) -> list[str]:
    """Create the topics that do not exist yet (name -> partitions); returns those created."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap_servers(settings), client_id="waitroom-admin"
    )
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(name, num_partitions=parts, replication_factor=1)
            for name, parts in topics.items()
            if name not in existing
        ]
        if wanted:
            # Another process may create them between our listing and this call.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(wanted)
        return [t.name for t in wanted]
    finally:
        admin.close()


def default_topics(
    consumer: ConsumerSettings, partitions: int = TOPIC_PARTITIONS
) -> dict[str, int]:
    """Every topic the waitroom produces or consumes, with a partition count."""
    names = [
        *messages.PRODUCED_TOPICS,
        consumer.topic_completed,
        consumer.topic_failed,
        consumer.topic_expired,
        consumer.dlq_topic,
        messages.EVENTS_TOPIC,
    ]
    return dict.fromkeys(names, partitions)


class KafkaThread:
    """One daemon thread for every blocking call on one process's Kafka clients."""

    def __init__(self, name: str = "kafka") -> None:
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    async def call(self, func: Callable[[], T]) -> T:
        """Run ``func`` on the thread and return (or raise) what it did."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((func, future))
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """End the thread once the calls already queued have run."""
        self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            func, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(func())
            except BaseException as exc:  # handed to the awaiting coroutine
                future.set_exception(exc)


def abandon(producer: Any) -> None:
    """Close a producer whose records may be stuck on a broker that went away.

    kafka-python's ``close()`` flushes first, and a flush of stuck records times out and leaves
    the producer half closed (its I/O thread running, its finaliser raising later). Stopping
    the I/O thread without sending fails the stuck records, and the close then completes.
    """
    try:
        producer.close(timeout=0)
        return
    except Exception:
        sender = getattr(producer, "_sender", None)
        if sender is None:
            raise
    sender.force_close()
    sender.join(5)
    producer.close(timeout=0)
