"""``waitroom dev down``: stop a stack another ``waitroom dev up`` started, or its leftovers."""

from __future__ import annotations

import contextlib
from pathlib import Path

from waitroom_dev.stack import supervise
from waitroom_dev.stack.options import StackError
from waitroom_dev.stack.state import StackState, end_groups, is_ours, terminate


def stop_stack(state: StackState, timeout: float) -> None:
    """Stop a stack started by another ``waitroom dev up`` (``waitroom dev down``, and the next
    ``dev up`` in the same state dir).

    The owner is asked with SIGTERM and does the orderly stop itself; if it is gone (killed
    without a chance to clean up), what it left behind is stopped here, drains first. Every
    pid comes from the state file or supervisord, and is checked by its command line before it
    is signalled, so a pid since reused by another program is left alone.
    """
    if is_ours(state.pid, "waitroom"):
        if terminate(state.pid, timeout):
            raise StackError(f"waitroom dev up (pid {state.pid}) did not stop; it was killed")
        if not is_ours(state.supervisord_pid, "supervisord"):
            return
    programs = set(state.programs.values())
    with contextlib.suppress(OSError):  # supervisord knows best, when it still answers
        infos = supervise.SupervisorClient(Path(state.socket)).processes()
        programs |= {p.pid for p in infos if p.pid}
    if is_ours(state.supervisord_pid, "supervisord"):
        terminate(state.supervisord_pid, timeout)  # it stops its programs, drains first
    # Programs supervisord did not stop: it was killed, or it gave up waiting on them.
    end_groups([pid for pid in programs if is_ours(pid, "waitroom")], grace=timeout / 4)
    port_of = {
        state.kafka_pid: state.bootstrap.rpartition(":")[2],
        state.redis_pid: state.redis_url.rpartition(":")[2].partition("/")[0],
    }
    for pid, port in port_of.items():
        if is_ours(pid, port):
            terminate(pid, 10.0)
    state.remove()
