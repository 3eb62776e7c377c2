"""The production supervisord.conf, run for real against the test Redis and broker.

Only what a test machine must change is changed: the runtime folder (systemd would create
/run/waitroom) and the metrics port prefixes (the fixed ones may be taken here). The four API
processes share one gRPC port, every process serves metrics and reports a heartbeat, and a
SIGTERM to supervisord drains and stops every process with exit status 0 well before SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import xmlrpc.client
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from deploy_support import DEPLOY
from grpc_health.v1 import health_pb2, health_pb2_grpc
from supervisor.xmlrpc import SupervisorTransport

from waitroom_dev.services import free_port

PROGRAMS = {"api": 4, "admitter": 2, "consumer": 1}
START_DEADLINE = 60.0
STOP_DEADLINE = 45.0


def _free_prefix() -> str:
    """Four digits P such that ports P0..P9 are free now (below Linux's ephemeral range, so
    no outgoing connection takes one meanwhile)."""
    for _ in range(200):
        prefix = 2000 + free_port() % 1200
        ports = [prefix * 10 + n for n in range(10)]
        try:
            for port in ports:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return str(prefix)
    raise RuntimeError("no ten free consecutive ports")


def _wait_for(what: str, check: Callable[[], bool], stack: Stack, deadline: float) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end and stack.proc.poll() is None:
        if check():
            return
        time.sleep(0.3)
    log = stack.log.read_text()[-4000:]
    pytest.fail(f"no {what} within {deadline:g} s (supervisord: {stack.proc.poll()}):\n{log}")


class Stack:
    """supervisord running the shipped configuration."""

    def __init__(self, run_dir: Path, env: dict[str, str], prefixes: dict[str, str]) -> None:
        text = (DEPLOY / "supervisor" / "supervisord.conf").read_text()
        text = text.replace("/run/waitroom/", f"{run_dir}/")
        for shipped, prefix in prefixes.items():
            assert f'"{shipped}%(process_num)d"' in text
            text = text.replace(f'"{shipped}%(process_num)d"', f'"{prefix}%(process_num)d"')
        self.conf = run_dir / "supervisord.conf"
        self.conf.write_text(text)
        self.sock = run_dir / "supervisor.sock"
        self.log = run_dir / "supervisord.out"
        self.env = env
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.conf)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def processes(self) -> list[dict[str, Any]]:
        transport = SupervisorTransport(None, None, serverurl=f"unix://{self.sock}")
        proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        rows: list[dict[str, Any]] = proxy.supervisor.getAllProcessInfo()
        return rows

    def all_running(self) -> bool:
        try:
            rows = self.processes()
        except OSError:
            return False
        return len(rows) == sum(PROGRAMS.values()) and all(
            row["statename"] == "RUNNING" for row in rows
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def stack(
    tmp_path: Path, process_env: dict[str, str]
) -> Iterator[tuple[Stack, int, dict[str, str]]]:
    api_port = free_port()
    env = dict(process_env)
    env["WAITROOM_API_ADDR"] = f"127.0.0.1:{api_port}"
    # The programs run `waitroom`: the console script installed beside this interpreter.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    prefixes = {"911": _free_prefix(), "912": _free_prefix(), "913": _free_prefix()}
    running = Stack(tmp_path, env, prefixes)
    pids: list[int] = []
    try:
        _wait_for("every program RUNNING", running.all_running, running, START_DEADLINE)
        pids = [row["pid"] for row in running.processes()]
        yield running, api_port, prefixes
    finally:
        running.kill()
        for pid in pids:  # never leave a waitroom process behind, whatever failed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _serving(port: int) -> bool:
    """The standard health service answers SERVING (False while nothing listens yet)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _listeners(port: int) -> int:
    """Sockets listening on ``port`` (Linux): with SO_REUSEPORT, one per API process."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as rows:
            for row in rows.readlines()[1:]:
                local, state = row.split()[1], row.split()[3]
                count += int(local.rpartition(":")[2], 16) == port and state == "0A"
    return count


def _serves_metrics(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return "# TYPE waitroom_" in reply.read().decode()
    except OSError:
        return False


def _check(process: str, replica: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["waitroom", process, "check", "--replica", replica],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.timeout(240)
def test_supervisor_runs_every_process_and_stops_them_cleanly(
    stack: tuple[Stack, int, dict[str, str]],
) -> None:
    running, api_port, prefixes = stack
    rows = running.processes()
    names = sorted(row["name"] for row in rows)
    assert names == sorted(f"{p}-{n}" for p, count in PROGRAMS.items() for n in range(count))

    # Every process serves its metrics on its own port; "RUNNING" only means alive for
    # startsecs, so give start-up time on a busy machine.
    for shipped, program in (("911", "api"), ("912", "admitter"), ("913", "consumer")):
        for n in range(PROGRAMS[program]):
            port = int(f"{prefixes[shipped]}{n}")
            _wait_for(f"{program}-{n} metrics", lambda p=port: _serves_metrics(p), running, 30)

    # The four API processes share one port (SO_REUSEPORT), and it answers.
    api_count = PROGRAMS["api"]
    _wait_for(f"{api_count} listeners", lambda: _listeners(api_port) == api_count, running, 30)
    _wait_for("SERVING health", lambda: _serving(api_port), running, 30)
    assert running.all_running()

    # Each worker reports a heartbeat under the replica id the conf gives it.
    host = platform.node()
    for program in ("admitter", "consumer"):
        for n in range(PROGRAMS[program]):
            replica = f"{host}-{program}-{n}"
            _wait_for(
                f"{replica} heartbeat",
                lambda p=program, r=replica: _check(p, r, running.env).returncode == 0,
                running,
                30,
            )
        assert _check(program, f"{host}-{program}-9", running.env).returncode == 4

    pids = [row["pid"] for row in rows]
    running.proc.send_signal(signal.SIGTERM)
    assert running.proc.wait(STOP_DEADLINE) == 0
    log = running.log.read_text()
    stopped = dict(re.findall(r"stopped: (\S+) \(([^)]*)\)", log))
    assert stopped == dict.fromkeys(names, "exit status 0"), log[-4000:]
    assert "SIGKILL" not in log
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
