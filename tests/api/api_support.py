"""Helpers for the API tests: the API as a real process, events, and error assertions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from shared.events import EventConfig, EventStore
from shared.scripts import Scripts
from tests.support import with_scripts
from waitroom_dev.services import free_port, wait_for_port

T = TypeVar("T")

SECRET = "api-tests-secret-0123456789abcdef-0123"

CHECKOUT_URL = "https://shop.test/checkout/{event_id}?session={session_id}"
WEBSOCKET_URL = "wss://gw.test/queue/{event_id}/{session_id}"


@dataclass
class ApiProcess:
    """A running ``waitroom api`` process."""

    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def api_env(redis_url: str, bootstrap: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "WAITROOM_REDIS_URL": redis_url,
            "WAITROOM_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "WAITROOM_JWT_SECRET": SECRET,
            "WAITROOM_CHECKOUT_URL": CHECKOUT_URL,
            "WAITROOM_WEBSOCKET_URL": WEBSOCKET_URL,
            # Short intervals so stream tests see polling within a test's patience.
            "WAITROOM_API_STREAM_POLL_SECONDS": "0.5",
            "WAITROOM_API_STREAM_MIN_INTERVAL_SECONDS": "0.05",
            "WAITROOM_API_GRACE_SECONDS": "2",
            "WAITROOM_LOG_LEVEL": "INFO",
        }
    )
    env.update(extra)
    return env


def launch(env: dict[str, str], log_path: Path, *, command: list[str] | None = None) -> ApiProcess:
    """Start the API with ``env`` on free ports and wait until it accepts connections."""
    port, metrics_port = free_port(), free_port()
    env = {
        **env,
        "WAITROOM_API_ADDR": f"127.0.0.1:{port}",
        "WAITROOM_METRICS_PORT": str(metrics_port),
    }
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            command or [sys.executable, "-m", "waitroom_api"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    api = ApiProcess(proc, port, metrics_port, log_path)
    try:
        wait_for_port(port, 30, proc)
    except Exception:
        api.stop()
        raise AssertionError(f"the API did not start:\n{api.log()}") from None
    return api


def scrape(api: ApiProcess, host: str = "127.0.0.1") -> str:
    """The text of ``api``'s /metrics."""
    url = f"http://{host}:{api.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
    return text


def make_event(redis_url: str, event_id: str, **settings: Any) -> EventConfig:
    async def create(s: Scripts) -> EventConfig:
        return await EventStore(s.redis, s).create(EventConfig(event_id, **settings))

    return with_scripts(redis_url, create)


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    """The error ``call`` fails with (and fail the test if it succeeds)."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def status_of(error: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    return error.code(), error.details()  # type: ignore[attr-defined]
