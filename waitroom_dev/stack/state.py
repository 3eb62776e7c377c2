"""The dev stack's state file: where everything listens and which processes it started.

``waitroom dev up`` writes it once the stack is up; ``dev status``, ``dev down`` and
``simulate`` read it, possibly from another terminal.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shared.cli import DEV_STATE_FILE

# Where the operator commands look for a running stack too (shared.cli), so one place says it.
DEFAULT_STATE_DIR = DEV_STATE_FILE.parent
STATE_FILE = DEV_STATE_FILE.name


@dataclass
class StackState:
    """Everything another terminal needs to find and stop a running dev stack."""

    pid: int  # the `waitroom dev up` process
    state_dir: str
    event_id: str
    api_target: str
    redis_url: str
    redis_pid: int
    bootstrap: str
    kafka_pid: int
    supervisord_pid: int
    conf: str
    socket: str
    metrics: dict[str, int] = field(default_factory=dict)  # program name -> metrics port
    kafka_client: dict[str, int] = field(default_factory=dict)  # consumer timeouts in use
    programs: dict[str, int] = field(default_factory=dict)  # supervisord program -> pid seen
    started_ms: int = 0

    @staticmethod
    def path(state_dir: Path) -> Path:
        return state_dir / STATE_FILE

    def save(self) -> None:
        target = self.path(Path(self.state_dir))
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n", "utf-8")
        os.replace(tmp, target)  # readers never see half a file

    @classmethod
    def load(cls, state_dir: Path) -> StackState | None:
        """The state in ``state_dir``, or None when there is none (or it is unreadable)."""
        try:
            data = json.loads(cls.path(state_dir).read_text("utf-8"))
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None

    def remove(self) -> None:
        self.path(Path(self.state_dir)).unlink(missing_ok=True)


def alive(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie awaiting its parent counts as gone)."""
    if pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # The state letter follows the parenthesised command name, which may itself hold spaces.
    return stat.rpartition(")")[2].split()[0] != "Z"


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def is_ours(pid: int, marker: str) -> bool:
    """``pid`` is alive and still the program we started (not a recycled pid)."""
    if not alive(pid):
        return False
    line = cmdline(pid)
    return marker in line if line else True


def terminate(pid: int, timeout: float) -> bool:
    """SIGTERM ``pid``, then SIGKILL after ``timeout``; True if it had to be killed."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    if wait_gone([pid], timeout):
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    wait_gone([pid], 5.0)
    return True


def wait_gone(pids: list[int], timeout: float) -> bool:
    """Wait until none of ``pids`` is alive; False on timeout."""
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def end_groups(leaders: Iterable[int], grace: float) -> None:
    """Stop the process groups ``leaders`` lead: SIGTERM, then SIGKILL what is left after
    ``grace`` seconds (supervisord runs each program as a group leader, so its children go
    too)."""
    pids = list(leaders)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
        if wait_gone(pids, grace if sig == signal.SIGTERM else 5.0):
            return
