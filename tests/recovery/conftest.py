"""Fixtures for the recovery tests: each test gets a Redis of its own (it kills and cuts it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from recovery_support import OwnRedis, Stack


@pytest.fixture
def volatile_stack(bootstrap: str, tmp_path: Path) -> Iterator[Stack]:
    """A Redis without persistence: a restart empties it."""
    stack = Stack(OwnRedis(tmp_path / "redis", durable=False), bootstrap, tmp_path)
    yield stack
    stack.cleanup()


@pytest.fixture
def durable_stack(bootstrap: str, tmp_path: Path) -> Iterator[Stack]:
    """A Redis with an AOF written every second."""
    stack = Stack(OwnRedis(tmp_path / "redis", durable=True), bootstrap, tmp_path)
    yield stack
    stack.cleanup()
