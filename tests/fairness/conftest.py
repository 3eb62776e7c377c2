"""Fixtures for the fairness tests: admitter processes (killed at the end), the API process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from shared.proto import waitroom_pb2_grpc
from tests.admitter.admitter_support import Admitters
from tests.api.api_support import ApiProcess, api_env, launch
from waitroom_dev.services import LocalServices


@pytest.fixture
def admitters(process_env: dict[str, str], tmp_path: Path) -> Iterator[Admitters]:
    env = dict(process_env)
    env.update({"WAITROOM_ADMITTER_SWEEP_SECONDS": "0.2", "WAITROOM_ADMITTER_GRACE_SECONDS": "5"})
    factory = Admitters(env, tmp_path)
    yield factory
    factory.cleanup()


@pytest.fixture(scope="module")
def api(services: LocalServices, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    """An API process for this module, with streams re-read every 0.5 s."""
    log_path = tmp_path_factory.mktemp("fair-api") / "api.log"
    process = launch(api_env(services.redis_url, services.bootstrap), log_path)
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture
def stub(api: ApiProcess, redis_url: str) -> Iterator[waitroom_pb2_grpc.WaitroomServiceStub]:
    with grpc.insecure_channel(api.address) as channel:
        yield waitroom_pb2_grpc.WaitroomServiceStub(channel)
