"""Starting ``waitroom dev up`` as a subprocess and watching its output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from waitroom_dev.stack.down import stop_stack
from waitroom_dev.stack.programs import waitroom_command
from waitroom_dev.stack.state import StackState, alive

READY_LINE = "waitroom dev stack is ready"


def clean_env() -> dict[str, str]:
    """This environment without WAITROOM_ variables, so only the stack's own settings count."""
    return {k: v for k, v in os.environ.items() if not k.startswith("WAITROOM_")}


def dev_up_command(state_dir: Path, *options: str) -> list[str]:
    return [
        waitroom_command(),
        "dev",
        "up",
        "--free-ports",
        "--state-dir",
        str(state_dir),
        *options,
    ]


class DevUp:
    """A ``waitroom dev up`` child whose output is collected line by line."""

    def __init__(self, state_dir: Path, *options: str) -> None:
        self.state_dir = state_dir
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            dev_up_command(state_dir, *options),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=clean_env(),
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if READY_LINE in line:
                self.ready.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout: float = 90.0) -> StackState:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.2):
            assert self.proc.poll() is None, f"dev up exited early:\n{self.output}"
            assert time.monotonic() < deadline, f"dev up not ready in {timeout}s:\n{self.output}"
        state = StackState.load(self.state_dir)
        assert state is not None, self.output
        return state

    def stop(self, timeout: float = 90.0) -> int:
        """SIGTERM, then the exit code (killed if it does not stop in time)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self._reader.join(5)
        return code


def cleanup(stack: DevUp) -> None:
    """After a failed test: stop dev up, and whatever it left if it could not stop itself."""
    stack.stop()
    left = StackState.load(stack.state_dir)
    if left is not None:
        stop_stack(left, timeout=30)


def waitroom(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [waitroom_command(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
        check=False,
    )


def status(state_dir: Path) -> tuple[int, dict[str, Any]]:
    done = waitroom("dev", "status", "--json", "--state-dir", str(state_dir))
    return done.returncode, json.loads(done.stdout)


def stack_pids(state: StackState, report: dict[str, Any]) -> dict[str, int]:
    """Every process the stack started: services, supervisord and its programs."""
    pids = {
        "redis": state.redis_pid,
        "kafka": state.kafka_pid,
        "supervisord": state.supervisord_pid,
    }
    pids |= {p["name"]: p["pid"] for p in report["processes"]}
    return pids


def survivors(pids: dict[str, int], timeout: float = 10.0) -> dict[str, int]:
    """The processes still alive after ``timeout`` (an empty dict is what a test wants)."""
    deadline = time.monotonic() + timeout
    while True:
        left = {name: pid for name, pid in pids.items() if alive(pid)}
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


# Starts a stack as `dev up` does, prints its programs' pids, then dies by SIGKILL having stopped
# nothing: a `dev up` killed on a platform without a parent-death signal.
_LEAVE_BEHIND = """
import json, os, signal, sys, threading
from pathlib import Path
from waitroom_dev.stack.options import StackOptions
from waitroom_dev.stack.up import DevStack
options = StackOptions(Path(sys.argv[1]), admitters=1, free_ports=True, die_with_parent=False)
stack = DevStack(options)
stack.start()
assert stack.wait_ready(threading.Event())
print(json.dumps(stack.program_pids), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def leave_a_stack_behind(state_dir: Path) -> dict[str, int]:
    """Every process a killed ``dev up`` left running in ``state_dir``, by name."""
    done = subprocess.run(
        [sys.executable, "-c", _LEAVE_BEHIND, str(state_dir)],
        capture_output=True,
        text=True,
        timeout=150,
        env=clean_env(),
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    state = StackState.load(state_dir)
    assert state is not None and not alive(state.pid)
    programs: dict[str, int] = json.loads(done.stdout)
    assert len(programs) == 3, programs  # api, admitter-1, consumer
    return {
        "redis": state.redis_pid,
        "kafka": state.kafka_pid,
        "supervisord": state.supervisord_pid,
        **programs,
    }
