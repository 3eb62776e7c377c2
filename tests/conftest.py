"""Test harness: a real Redis and a real Kafka-protocol broker, started once per session.

A missing server is a failure, never a skip. Each test gets a flushed Redis; Kafka state lives
for the session, so tests tell their messages apart by unique event ids.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from waitroom_dev.services import LocalServices, local_services

JWT_SECRET = "test-secret-0123456789abcdef0123"


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServices]:
    workdir: Path = tmp_path_factory.mktemp("services")
    with local_services(workdir) as svc:
        yield svc


@pytest.fixture
def redis_url(services: LocalServices) -> str:
    """The session's Redis, emptied for this test."""
    client = redis.Redis.from_url(services.redis_url)
    try:
        client.flushall()
    finally:
        client.close()
    return services.redis_url


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def bootstrap(services: LocalServices) -> str:
    return services.bootstrap


@pytest.fixture
def event_id() -> str:
    """A unique event id, so Kafka messages of one test never match another's."""
    return f"ev-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def process_env(redis_url: str, bootstrap: str) -> dict[str, str]:
    """Environment for a waitroom subprocess against the test services, with the short
    consumer-group timeouts the Tansu broker needs (a join waits half the session timeout)."""
    env = dict(os.environ)
    env.update(
        {
            "WAITROOM_REDIS_URL": redis_url,
            "WAITROOM_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "WAITROOM_JWT_SECRET": JWT_SECRET,
            "WAITROOM_KAFKA_SESSION_TIMEOUT_MS": "2000",
            "WAITROOM_KAFKA_HEARTBEAT_INTERVAL_MS": "600",
            "WAITROOM_KAFKA_FETCH_MAX_WAIT_MS": "50",
            "WAITROOM_LOG_LEVEL": "INFO",
            "WAITROOM_KAFKA_AUTO_CREATE_TOPICS": "1",
        }
    )
    return env
