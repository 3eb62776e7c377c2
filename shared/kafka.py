"""Kafka, the same way in every process: the clients, the topics, and where blocking calls run.

kafka-python is blocking and its clients are not thread-safe. Every process therefore runs all
of one client's calls on one ``KafkaThread`` (a daemon thread: a call stuck on an unreachable
broker can never keep the process from exiting, where a pool thread would be joined at exit),
and awaits them from asyncio. Before building a client, ``probe_kafka`` makes a plain TCP
connect: kafka-python spends 30 s trying to bootstrap from a dead broker (and leaves a thread
behind each time), so a retry during an outage stays fast and clean.

Security (TLS, SASL) comes from the settings through ``client_options``, the one place a
client's connection options are built. With TLS, building a client first makes one TLS
handshake (``probe_tls``): kafka-python reports a broker certificate it does not trust only as
a failure to bootstrap once its timeout has passed, while the handshake names the cause at once
in one line.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import socket
import ssl
import threading
import warnings
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

# --- Topics as the old service had them (CONTRACT.md, "Defaults the old service used") -------
#: Partitions of the checkout outcome topics: the order service keys them by event id, so this
#: bounds how many consumer replicas share the work.
CHECKOUT_PARTITIONS = 10
#: The old service's partition counts of the topics it produced; ``default_topics`` adds the
#: checkout topics under their configured names.
OLD_SERVICE_PARTITIONS = {
    messages.QUEUE_JOINED: 5,
    messages.QUEUE_LEFT: 5,
    messages.QUEUE_READY: 10,
    # New: operators' changes to events, a trickle like the smaller topics.
    messages.WAITROOM_AUDIT: 5,
    # New: each event's latest watermark, for recovery (compacted: see TOPIC_CONFIGS).
    messages.EVENTS_TOPIC: 5,
    # New: scheduled openings' commitments and reveals, two messages per draw.
    messages.WAITROOM_DRAWS: 5,
}
#: Per-topic configuration given when a topic is created.
TOPIC_CONFIGS = {messages.EVENTS_TOPIC: {"cleanup.policy": "compact"}}
#: The dead-letter topic is new; a trickle of messages needs no more than the smaller topics.
DEAD_LETTER_PARTITIONS = 5
#: Replicas per partition ``waitroom kafka create-topics`` asks for unless told otherwise: a
#: producer's acks=all is only as safe as the replication behind it.
DEFAULT_REPLICATION_FACTOR = 3


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


class KafkaTlsRefused(KafkaUnreachable):
    """A broker was reached but the TLS handshake with it failed (an untrusted certificate,
    a client certificate the broker refused, no TLS on that port)."""


def client_options(settings: CommonSettings) -> dict[str, Any]:
    """Where Kafka is and how to talk to it: the options every kafka-python client (producer,
    consumer, admin) is built with, under kafka-python's own parameter names."""
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers(settings),
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_tls:
        options.update(
            ssl_cafile=settings.kafka_ssl_cafile or None,
            ssl_certfile=settings.kafka_ssl_certfile or None,
            ssl_keyfile=settings.kafka_ssl_keyfile or None,
            ssl_password=settings.kafka_ssl_password or None,
        )
    if settings.kafka_sasl:
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password,
        )
    return options


def tls_context(settings: CommonSettings) -> ssl.SSLContext | None:
    """The TLS context kafka-python builds from ``client_options`` (TLS 1.2 or later, the
    broker's certificate and host name verified), or None without TLS."""
    if not settings.kafka_tls:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.kafka_ssl_cafile:
        context.load_verify_locations(settings.kafka_ssl_cafile)
    else:
        context.load_default_certs()
    if settings.kafka_ssl_certfile:
        password = settings.kafka_ssl_password
        context.load_cert_chain(
            settings.kafka_ssl_certfile,
            settings.kafka_ssl_keyfile or None,
            lambda: password.encode(),
        )
    return context


def probe_tls(settings: CommonSettings, timeout: float = PROBE_SECONDS) -> None:
    """With TLS on, complete a handshake with a bootstrap server, or raise KafkaTlsRefused
    saying why (KafkaUnreachable when none accepts a TCP connection)."""
    context = tls_context(settings)
    if context is None:
        return
    errors = []
    for address in bootstrap_servers(settings):
        host, _, port = address.rpartition(":")
        host = host.strip("[]") or "localhost"
        try:
            with (
                socket.create_connection((host, int(port)), timeout) as sock,
                context.wrap_socket(sock, server_hostname=host) as tls,
            ):
                if settings.kafka_ssl_certfile:
                    # TLS 1.3 delivers the broker's verdict on our certificate after the
                    # handshake; one short read brings it in (a broker that accepted us
                    # stays silent, so this costs its 0.2 s only with a client certificate).
                    tls.settimeout(min(timeout, 0.2))
                    with contextlib.suppress(TimeoutError, ssl.SSLWantReadError):
                        tls.recv(1)
                return
        except ssl.SSLCertVerificationError as exc:
            raise KafkaTlsRefused(
                f"{address}: the broker's certificate is not trusted ({exc.verify_message}); "
                "check WAITROOM_KAFKA_SSL_CAFILE"
            ) from None
        except ssl.SSLError as exc:
            raise KafkaTlsRefused(
                f"{address}: TLS handshake failed ({exc.reason or exc}); check "
                "WAITROOM_KAFKA_SECURITY_PROTOCOL and the client certificate"
            ) from None
        except (OSError, ValueError) as exc:
            errors.append(f"{address}: {exc}")
    raise KafkaUnreachable("; ".join(errors) or "no bootstrap servers configured")


def kafka_producer(settings: CommonSettings, tuning: KafkaClientSettings, *, client_id: str) -> Any:
    """An idempotent producer waiting for all in-sync replicas (acks=all)."""
    from kafka import KafkaProducer

    probe_tls(settings)
    return KafkaProducer(
        **client_options(settings),
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

    probe_tls(settings)
    return KafkaConsumer(
        **client_options(settings),
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


def ensure_topics(
    settings: CommonSettings,
    topics: dict[str, int],
    *,
    replication_factor: int = 1,
    explicit: bool = False,
) -> list[str]:
    """Create the topics that do not exist yet (name -> partitions); returns those created.

    A process calls this without ``explicit``: then it creates nothing unless
    ``WAITROOM_KAFKA_AUTO_CREATE_TOPICS`` is on, so a production process never creates a topic
    with one replica by accident (``waitroom kafka create-topics`` creates them properly).
    Tools that exist to create topics (the dev stack, tests) pass ``explicit=True``.
    """
    # Imported here so this function's change stays one hunk apart from the client builders'.
    from shared.settings import KafkaTopicSettings, load

    if not explicit and not load(KafkaTopicSettings).auto_create:
        return []
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    probe_tls(settings)
    admin = KafkaAdminClient(**client_options(settings), client_id="waitroom-admin")
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(
                name,
                num_partitions=parts,
                replication_factor=replication_factor,
                topic_configs=TOPIC_CONFIGS.get(name, {}),
            )
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


def default_topics(consumer: ConsumerSettings, partitions: int | None = None) -> dict[str, int]:
    """Every topic the waitroom produces or consumes, with a partition count: the old
    service's (``OLD_SERVICE_PARTITIONS``) unless one count for all is given."""
    counts = {
        **OLD_SERVICE_PARTITIONS,
        consumer.topic_completed: CHECKOUT_PARTITIONS,
        consumer.topic_failed: CHECKOUT_PARTITIONS,
        consumer.topic_expired: CHECKOUT_PARTITIONS,
        consumer.dlq_topic: DEAD_LETTER_PARTITIONS,
    }
    names = [
        *messages.PRODUCED_TOPICS,
        consumer.topic_completed,
        consumer.topic_failed,
        consumer.topic_expired,
        consumer.dlq_topic,
        messages.EVENTS_TOPIC,
    ]
    return {name: partitions or counts[name] for name in names}


def import_kafka() -> None:
    """Import kafka-python now, on the calling thread, with its import-time DeprecationWarning
    silenced.

    Every Kafka call runs on a ``KafkaThread``, and a process may have several (the relay's, the
    recovery guard's). kafka-python's package imports itself in a cycle (``kafka`` imports
    ``kafka.admin``, which imports ``kafka``), so two threads importing it for the first time at
    once can see it half built: an admitter's first recovery check failed with "cannot import
    name 'KafkaAdminClient' from partially initialized module 'kafka.admin'". Importing it
    before any such thread starts makes every later import a lookup. The warnings filters are
    not safe to change from a thread, which is one more reason to do it here.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import kafka  # noqa: F401


class KafkaThread:
    """One daemon thread for every blocking call on one process's Kafka clients."""

    def __init__(self, name: str = "kafka") -> None:
        import_kafka()
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
