"""Building the Redis and Kafka clients every process uses, from settings."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterable
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis

from shared import messages
from shared.settings import CommonSettings, ConsumerSettings, KafkaClientSettings


def redis_client(settings: CommonSettings, *, max_connections: int | None = None) -> Redis:
    """An asyncio Redis client; connection errors surface to the caller's retry loop.

    With ``max_connections``, callers beyond that many concurrent commands wait (up to 10 s)
    for a free connection instead of opening more, so a burst of requests cannot open
    thousands of connections (or fail with "Too many connections" at redis-py's default 100).
    """
    options: dict[str, Any] = {
        "socket_connect_timeout": 2,
        "socket_timeout": 10,
        "health_check_interval": 15,
        "decode_responses": False,
    }
    if max_connections is None:
        return Redis.from_url(settings.redis_url, **options)
    pool = BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=max_connections, timeout=10, **options
    )
    return Redis.from_pool(pool)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("kafka").setLevel(logging.ERROR)


def bootstrap_servers(settings: CommonSettings) -> list[str]:
    """The ``host:port`` entries of WAITROOM_KAFKA_BOOTSTRAP_SERVERS."""
    return [s.strip() for s in settings.kafka_bootstrap_servers.split(",") if s.strip()]


class KafkaUnreachable(ConnectionError):
    """No bootstrap server accepted a TCP connection."""


def probe_kafka(addresses: Iterable[str], timeout: float = 2.0) -> None:
    """Raise KafkaUnreachable unless some bootstrap server accepts a TCP connection.

    kafka-python spends 30 s trying to bootstrap from a dead broker (and leaves a thread behind
    each time), so a cheap connect first keeps retries during an outage fast and clean.
    """
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


def default_topics(consumer: ConsumerSettings, partitions: int = 4) -> dict[str, int]:
    """Every topic the waitroom produces or consumes, with a partition count."""
    names = [
        *messages.PRODUCED_TOPICS,
        consumer.topic_completed,
        consumer.topic_failed,
        consumer.topic_expired,
        consumer.dlq_topic,
    ]
    return dict.fromkeys(names, partitions)
