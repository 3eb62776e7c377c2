"""``waitroom dev down``: stop a stack another ``waitroom dev up`` started, or its leftovers."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from waitroom_dev.stack import supervise
from waitroom_dev.stack.options import StackError
from waitroom_dev.stack.state import StackState, alive, is_ours, terminate


def stop_stack(state: StackState, timeout: float) -> None:
    """Stop a stack started by another ``waitroom dev up`` (``waitroom dev down``).

    The owner is asked with SIGTERM and does the orderly stop itself; if it is gone (killed
    without a chance to clean up), what it left behind is stopped here, drains first.
    """
    if is_ours(state.pid, "waitroom"):
        if terminate(state.pid, timeout):
            raise StackError(f"waitroom dev up (pid {state.pid}) did not stop; it was killed")
        if not is_ours(state.supervisord_pid, "supervisord"):
            return
    program_pids: list[int] = []
    with contextlib.suppress(OSError):
        infos = supervise.SupervisorClient(Path(state.socket)).processes()
        program_pids = [p.pid for p in infos if p.pid]
    if is_ours(state.supervisord_pid, "supervisord"):
        terminate(state.supervisord_pid, timeout)
    for pid in program_pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    port_of = {
        state.kafka_pid: state.bootstrap.rpartition(":")[2],
        state.redis_pid: state.redis_url.rpartition(":")[2].partition("/")[0],
    }
    for pid, port in port_of.items():
        if is_ours(pid, port):
            terminate(pid, 10.0)
    state.remove()
