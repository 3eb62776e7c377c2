"""Fixtures for the consumer tests: a unique group and topic names per test, and a factory of
consumer processes that are all killed at teardown."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from consumer_support import ConsumerProcess, Topics


@pytest.fixture
def topics() -> Topics:
    tag = uuid.uuid4().hex[:10]
    return Topics(
        completed=f"t-{tag}.completed",
        failed=f"t-{tag}.failed",
        expired=f"t-{tag}.expired",
        dlq=f"t-{tag}.dlq",
        group=f"g-{tag}",
    )


@pytest.fixture
def consumer_env(process_env: dict[str, str], topics: Topics) -> dict[str, str]:
    """The test services, this test's topics and group, and a short drain time."""
    return {**process_env, **topics.env(), "WAITROOM_CONSUMER_GRACE_SECONDS": "15"}


@pytest.fixture
def consumers(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], ConsumerProcess]]:
    """Factory: start a consumer process with an environment; all are killed at teardown."""
    started: list[ConsumerProcess] = []

    def start(env: dict[str, str]) -> ConsumerProcess:
        process = ConsumerProcess(env, tmp_path / f"consumer-{len(started)}.log").start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
