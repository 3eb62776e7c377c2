"""The waitroom's own processes (and the echo baseline) as subprocesses of a benchmark.

Each is started exactly as an operator would (``waitroom api`` and so on, settings from
``WAITROOM_`` variables), logs to a file in the run's work directory, and is stopped with
SIGTERM (then SIGKILL) when the benchmark ends, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from waitroom_dev.services import LocalServices, free_port, local_services

#: Any 32 bytes will do: the benchmark never hands a token to anyone.
JWT_SECRET = "bench-secret-0123456789abcdef-0123"

_CLI = "from waitroom_cli.main import cli; cli()"


class ProcessFailed(RuntimeError):
    """A process under benchmark exited early or never became ready."""


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""

    def wait_for_log(self, text: str, timeout: float) -> None:
        """Wait until ``text`` appears in the log (how a process says it is ready)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.proc.poll() is not None:
                raise ProcessFailed(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            time.sleep(0.02)
        raise ProcessFailed(f"{self.name} did not log {text!r} in {timeout:g}s:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Stack:
    """Redis, the broker, and whichever waitroom processes a benchmark starts on them."""

    def __init__(self, services: LocalServices) -> None:
        self.services = services
        self.procs: list[Proc] = []

    @property
    def redis_url(self) -> str:
        return self.services.redis_url

    @property
    def bootstrap(self) -> str:
        return self.services.bootstrap

    @property
    def redis_pid(self) -> int:
        pid = self.services.redis.pid
        assert pid is not None
        return pid

    @property
    def broker_pid(self) -> int:
        pid = self.services.kafka.pid
        assert pid is not None
        return pid

    def env(self, **extra: str) -> dict[str, str]:
        """Settings for a waitroom process on this stack.

        The consumer-group timeouts are the short ones the Tansu broker needs (a group join
        waits half the session timeout); everything else is the production default unless a
        benchmark says otherwise.
        """
        env = dict(os.environ)
        env.update(self.services.env())
        env.update(
            {
                "WAITROOM_JWT_SECRET": JWT_SECRET,
                "WAITROOM_KAFKA_SESSION_TIMEOUT_MS": "2000",
                "WAITROOM_KAFKA_HEARTBEAT_INTERVAL_MS": "600",
                "WAITROOM_LOG_LEVEL": "INFO",
                "WAITROOM_METRICS_PORT": "0",
            }
        )
        env.update(extra)
        return env

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        log_path = self.services.workdir / f"{name}-{len(self.procs)}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        started = Proc(name, proc, log_path)
        self.procs.append(started)
        return started

    def waitroom(self, command: str, env: dict[str, str]) -> Proc:
        return self.spawn(command, [sys.executable, "-c", _CLI, command], env)

    def api(self, port: int, **extra: str) -> Proc:
        """One ``waitroom api`` process on ``port`` (several may share it: SO_REUSEPORT)."""
        env = self.env(WAITROOM_API_ADDR=f"127.0.0.1:{port}", **extra)
        proc = self.waitroom("api", env)
        proc.wait_for_log("listening on", 30)
        return proc

    def echo(self, port: int, *, redis: bool = False) -> Proc:
        """The bare gRPC echo baseline on ``port`` (see ``bench.echo``); with ``redis``, one
        Redis round trip per call."""
        args = [sys.executable, "-m", "bench.echo", "--addr", f"127.0.0.1:{port}"]
        if redis:
            args += ["--redis", self.redis_url]
        proc = self.spawn("echo", args, self.env())
        proc.wait_for_log("listening on", 30)
        return proc

    def admitter(self, **extra: str) -> Proc:
        return self.waitroom("admitter", self.env(**extra))

    def consumer(self, **extra: str) -> Proc:
        proc = self.waitroom("consumer", self.env(**extra))
        proc.wait_for_log("assigned", 60)
        return proc

    def __repr__(self) -> str:
        running = sum(1 for p in self.procs if p.proc.poll() is None)
        return (
            f"Stack(redis={self.redis_url}, kafka={self.bootstrap}, "
            f"procs={len(self.procs)}, running={running})"
        )

    def stop_procs(self) -> None:
        while self.procs:
            self.procs.pop().stop()


@contextlib.contextmanager
def stack(workdir: Path | None = None) -> Iterator[Stack]:
    """Fresh Redis and broker (on free ports), stopped with every process started on them."""
    with local_services(workdir) as services:
        st = Stack(services)
        try:
            yield st
        finally:
            st.stop_procs()


__all__ = ["JWT_SECRET", "Proc", "ProcessFailed", "Stack", "free_port", "stack"]
