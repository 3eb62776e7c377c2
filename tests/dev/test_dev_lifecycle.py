"""`waitroom dev up` never leaves a process behind: not when its output pipe is gone, not when it
is killed (its children die with it), and not after a killed run on a platform where they would
not (the next `dev up`, or `dev down`, cleans up from the state file)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from dev_support import (
    READY_LINE,
    DevUp,
    clean_env,
    cleanup,
    dev_up_command,
    leave_a_stack_behind,
    stack_pids,
    status,
    survivors,
    waitroom,
)

from waitroom_dev.stack.down import stop_stack
from waitroom_dev.stack.state import StackState


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_dev_up_stops_everything_after_its_reader_went_away(
    tmp_path: Path, sig: signal.Signals
) -> None:
    # `waitroom dev up | tee log`, then Ctrl-C: tee is gone before dev up writes a word more.
    state_dir = tmp_path / "stack"
    proc = subprocess.Popen(
        dev_up_command(state_dir, "--admitters", "1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=clean_env(),
    )
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if READY_LINE in line:
                break
        assert READY_LINE in "".join(seen), "".join(seen)
        state = StackState.load(state_dir)
        assert state is not None
        code, report = status(state_dir)
        assert code == 0, report
        pids = stack_pids(state, report)
        assert len(pids) == 6  # redis, kafka, supervisord, api, admitter-1, consumer

        proc.stdout.close()
        proc.send_signal(sig)
        assert proc.wait(120) == 0
        assert survivors(pids) == {}
        assert StackState.load(state_dir) is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        left = StackState.load(state_dir)
        if left is not None:
            stop_stack(left, timeout=30)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux")
@pytest.mark.timeout(180)
def test_a_killed_dev_up_takes_its_whole_stack_with_it(tmp_path: Path) -> None:
    state_dir = tmp_path / "stack"
    stack = DevUp(state_dir, "--admitters", "1")
    try:
        state = stack.wait_ready()
        code, report = status(state_dir)
        assert code == 0, report
        pids = stack_pids(state, report)
        assert len(pids) == 6
        os.kill(state.pid, signal.SIGKILL)
        stack.proc.wait(10)
        # Redis and the broker are killed outright; supervisord is told to stop, and stops its
        # programs (each drains for up to its grace period against a Redis now gone).
        assert survivors(pids, timeout=90) == {}
    finally:
        cleanup(stack)


@pytest.mark.timeout(240)
def test_the_next_dev_up_cleans_up_what_a_killed_one_left(tmp_path: Path) -> None:
    state_dir = tmp_path / "stack"
    left = leave_a_stack_behind(state_dir)
    assert survivors(left, timeout=0) == left  # all of it still running
    stack = DevUp(state_dir, "--admitters", "1")
    try:
        stack.wait_ready()
        assert "cleaning up what an earlier stack" in stack.output
        assert survivors(left) == {}
    except BaseException:
        cleanup(stack)
        raise
    assert stack.stop() == 0, stack.output
    assert StackState.load(state_dir) is None


@pytest.mark.timeout(240)
def test_dev_down_cleans_up_what_a_killed_dev_up_left(tmp_path: Path) -> None:
    state_dir = tmp_path / "stack"
    left = leave_a_stack_behind(state_dir)
    try:
        assert survivors(left, timeout=0) == left
        code, report = status(state_dir)
        assert code != 0 and not report["healthy"] and not report["dev_up"]["alive"]

        down = waitroom("dev", "down", "--state-dir", str(state_dir), timeout=120)
        assert down.returncode == 0, down.stderr
        assert survivors(left) == {}
        assert StackState.load(state_dir) is None
    finally:
        state = StackState.load(state_dir)
        if state is not None:
            stop_stack(state, timeout=30)
