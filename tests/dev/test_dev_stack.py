"""The whole system in one command: `waitroom dev up`, a sale rehearsal against it, and a stop
that leaves nothing running. Everything here runs as a user would run it, in subprocesses; the
stack starts its own Redis and broker (not the session fixtures). How the stack ends when it is
killed or its output is gone: test_dev_lifecycle.py."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from dev_support import DevUp, cleanup, stack_pids, status, survivors, waitroom

from waitroom_dev.stack.state import StackState

USERS = 2000
CAP = 150


@pytest.mark.timeout(300)
def test_dev_up_runs_a_clean_rehearsal_and_stops_everything(tmp_path: Path) -> None:
    state_dir = tmp_path / "stack"
    stack = DevUp(
        state_dir, "--max-concurrent", str(CAP), "--rate", "1000", "--checkout-ttl", "20",
        "--admitters", "2",
    )  # fmt: skip
    try:
        state = stack.wait_ready()
        assert state.api_target in stack.output
        code, report = status(state_dir)
        assert code == 0, report
        assert report["healthy"]
        names = [p["name"] for p in report["processes"]]
        assert sorted(names) == ["admitter-1", "admitter-2", "api", "consumer"]
        assert all(p["state"] == "RUNNING" and p["pid"] for p in report["processes"])
        pids = stack_pids(state, report)

        # Each process serves its metrics on the port the stack gave it.
        with urllib.request.urlopen(f"http://127.0.0.1:{state.metrics['api']}/metrics") as page:
            assert b"waitroom_rpc_duration_seconds" in page.read()

        plot = tmp_path / "rehearsal.png"
        sim = waitroom(
            "simulate", "--state-dir", str(state_dir), "--users", str(USERS),
            "--arrival", "ramp", "--rate", "500", "--mode", "mixed",
            "--complete", "0.88", "--fail", "0.1", "--checkout-delay", "0.05", "0.3",
            "--seed", "7", "--timeout", "150", "--json", "--plot", str(plot),
            timeout=200,
        )  # fmt: skip
        assert sim.returncode in (0, 4), sim.stderr[-8000:]  # 1: stuck (stacks in stderr)
        result = json.loads(sim.stdout)
        assert sim.returncode == 0, (result["problems"], sim.stderr[-2000:])
        assert result["clean"]
        assert result["joined"] == USERS
        assert result["admitted"] == USERS
        assert result["lost"] == 0
        assert result["fifo_violations"] == 0
        assert 0 < result["checkout"]["max_sampled"] <= CAP
        assert result["checkout"]["max_from_records"] <= CAP
        # Every checkout ended one way or another: completed, failed, or left to expire.
        ended = result["completed"] + result["failed"] + result["expired_in_checkout"]
        assert ended + result["in_checkout_at_end"] == USERS
        assert result["completed"] > 0 and result["failed"] > 0
        assert result["wait_seconds"]["count"] == USERS
        assert result["join_latency_ms"]["count"] == USERS
        assert plot.read_bytes().startswith(b"\x89PNG")
    except BaseException:
        cleanup(stack)
        raise
    exit_code = stack.stop()
    assert exit_code == 0, stack.output
    assert "stopped; nothing left running" in stack.output
    assert survivors(pids) == {}
    assert StackState.load(state_dir) is None
