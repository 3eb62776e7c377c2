"""The ``waitroom api`` process: settings errors, draining on SIGTERM, and sharing a port."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import grpc
import pytest
from api_support import ApiProcess, api_env, make_event
from click.testing import CliRunner

from shared.cli import RET_ERROR, RET_FORCED, RET_SETTINGS
from shared.proto import waitroom_pb2 as pb
from shared.proto.waitroom_pb2_grpc import WaitroomServiceStub
from waitroom_api.cli import api as api_command


def _exit_code(api: ApiProcess, within: float) -> int:
    try:
        return api.proc.wait(within)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running after {within}s:\n{api.log()}") from None


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"WAITROOM_JWT_SECRET": "short"}, "WAITROOM_JWT_SECRET"),
        ({"WAITROOM_API_GRACE_SECONDS": "soon"}, "WAITROOM_API_GRACE_SECONDS"),
        ({"WAITROOM_API_REUSE_PORT": "maybe"}, "WAITROOM_API_REUSE_PORT"),
        ({"WAITROOM_API_STREAM_POLL_SECONDS": "0"}, "WAITROOM_API_STREAM_POLL_SECONDS"),
    ],
)
def test_bad_settings_stop_at_start_naming_the_variable(env: dict[str, str], named: str) -> None:
    base = {"WAITROOM_JWT_SECRET": "x" * 32}
    result = CliRunner().invoke(api_command, env={**base, **env})
    assert result.exit_code == RET_SETTINGS
    assert named in result.output


def test_sigterm_drains_open_streams_and_exits_0(
    process_env: dict[str, str], redis_url: str, start_api: Callable[..., ApiProcess]
) -> None:
    """The real console script: an open stream, SIGTERM, exit 0 within the grace period."""
    grace = 2.0
    command = [shutil.which("waitroom") or "waitroom", "api"]
    env = {**process_env, "WAITROOM_API_GRACE_SECONDS": str(grace)}
    api = start_api(env, command=command)
    make_event(redis_url, "concert1")
    with grpc.insecure_channel(api.address) as channel:
        stub = WaitroomServiceStub(channel)
        session = stub.JoinQueue(pb.JoinQueueRequest(user_id="u1", event_id="concert1"))
        updates = stub.StreamQueuePosition(
            pb.StreamPositionRequest(session_id=session.session_id), timeout=60
        )
        assert next(updates).position == 1

        started = time.monotonic()
        api.proc.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.RpcError) as ended:
            next(updates)  # the open stream is cut when the grace period ends
        assert ended.value.code() in (  # type: ignore[attr-defined]
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.CANCELLED,
        )
        assert _exit_code(api, grace + 10) == 0
        drained = time.monotonic() - started
    assert drained >= grace * 0.9  # it did wait for the stream rather than cut it at once
    assert "draining" in api.log()


def test_a_second_signal_stops_at_once(
    process_env: dict[str, str], redis_url: str, start_api: Callable[..., ApiProcess]
) -> None:
    api = start_api({**process_env, "WAITROOM_API_GRACE_SECONDS": "120"})
    make_event(redis_url, "concert1")
    with grpc.insecure_channel(api.address) as channel:
        stub = WaitroomServiceStub(channel)
        session = stub.JoinQueue(pb.JoinQueueRequest(user_id="u1", event_id="concert1"))
        updates = stub.StreamQueuePosition(
            pb.StreamPositionRequest(session_id=session.session_id), timeout=60
        )
        next(updates)
        api.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert api.proc.poll() is None  # still draining: the grace period is long
        api.proc.send_signal(signal.SIGINT)
        assert _exit_code(api, 15) == RET_FORCED
    assert "SIGINT again: exiting at once" in api.log()


def test_several_processes_can_share_a_port_only_with_reuse_port(
    redis_url: str, start_api: Callable[..., ApiProcess]
) -> None:
    first = start_api(api_env(redis_url, ""))
    env = {**api_env(redis_url, ""), "WAITROOM_API_ADDR": f"127.0.0.1:{first.port}"}
    command = [sys.executable, "-m", "waitroom_api"]

    refused = subprocess.run(
        command,
        env={**env, "WAITROOM_API_REUSE_PORT": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == RET_ERROR
    assert f"cannot serve on 127.0.0.1:{first.port}" in refused.stderr

    second = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert second.stdout is not None
        line = second.stdout.readline().decode()
        assert f"listening on 127.0.0.1:{first.port}" in line, line
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            code = second.wait(15)
        except subprocess.TimeoutExpired:
            second.kill()
            code = second.wait()
        rest = second.stdout.read().decode() if second.stdout else ""
    assert code == 0, rest
