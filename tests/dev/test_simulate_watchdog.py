"""A rehearsal that outlives its --timeout is stuck: it says so, prints where every thread
is, and exits, rather than hang silently until its caller kills it."""

from __future__ import annotations

import subprocess
import sys

from shared.cli import RET_ERROR

STUCK = """
import threading, time
from waitroom_dev.simulate.cli import watchdog
watchdog(0.5)
threading.Event().wait(30)  # a close that never returns
"""


def test_a_stuck_run_prints_every_thread_s_stack_and_exits() -> None:
    done = subprocess.run([sys.executable, "-c", STUCK], capture_output=True, text=True, timeout=20)
    assert done.returncode == RET_ERROR
    assert "past --timeout: stuck" in done.stderr
    assert "most recent call first" in done.stderr  # faulthandler's stack of each thread
    assert "wait" in done.stderr  # where the main thread was stuck


def test_a_run_that_ends_in_time_is_not_touched() -> None:
    ends = "from waitroom_dev.simulate.cli import watchdog; watchdog(5.0); print('done')"
    done = subprocess.run([sys.executable, "-c", ends], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0 and done.stdout == "done\n", done.stderr
