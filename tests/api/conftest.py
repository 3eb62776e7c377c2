"""Fixtures: the API as a real server process (``python -m waitroom_api``) on a free port.

One server runs for the whole session against the session's Redis (each test still gets a
flushed Redis through ``redis_url``); tests that need other settings start their own with
``start_api``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from api_support import ApiProcess, api_env, launch

from shared.proto import waitroom_pb2_grpc
from waitroom_dev.services import LocalServices


@pytest.fixture(scope="session")
def api_process(
    services: LocalServices, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    log_path = tmp_path_factory.mktemp("api") / "api.log"
    api = launch(api_env(services.redis_url, services.bootstrap), log_path)
    yield api
    code = api.stop()
    assert code == 0, f"the API exited with {code}:\n{api.log()}"


@pytest.fixture
def start_api(tmp_path: Path) -> Iterator[Callable[..., ApiProcess]]:
    """Factory for extra API processes with their own settings; all are stopped at the end."""
    started: list[ApiProcess] = []

    def start(env: dict[str, str], command: list[str] | None = None) -> ApiProcess:
        api = launch(env, tmp_path / f"api-{len(started)}.log", command=command)
        started.append(api)
        return api

    yield start
    for api in started:
        api.stop()


@pytest.fixture
def channel(api_process: ApiProcess, redis_url: str) -> Iterator[grpc.Channel]:
    """A channel to the session's API; ``redis_url`` makes sure Redis was flushed first."""
    with grpc.insecure_channel(api_process.address) as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.Channel) -> waitroom_pb2_grpc.WaitroomServiceStub:
    return waitroom_pb2_grpc.WaitroomServiceStub(channel)
