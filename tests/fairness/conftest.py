"""Fixtures for the fairness tests: admitter processes (killed at the end), the API process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.admitter.admitter_support import Admitters


@pytest.fixture
def admitters(process_env: dict[str, str], tmp_path: Path) -> Iterator[Admitters]:
    env = dict(process_env)
    env.update({"WAITROOM_ADMITTER_SWEEP_SECONDS": "0.2", "WAITROOM_ADMITTER_GRACE_SECONDS": "5"})
    factory = Admitters(env, tmp_path)
    yield factory
    factory.cleanup()
