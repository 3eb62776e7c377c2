"""A scheduled sale rehearsed end to end against `waitroom dev up`: a pre-queue and its draw,
users who abandon, an idle timeout, and the estimates given at join. Run as a user runs it, in
subprocesses (see test_dev_stack.py for the plain rehearsal)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dev_support import DevUp, cleanup, waitroom

USERS = 400
BEFORE = 0.5  # 200 users in the pre-queue
ABANDON = 0.1  # 40 users stop following right after joining
RATE = 20  # admitted per second: the pre-queue takes 10 s to drain
IDLE = 4  # seconds: less than any later arrival waits behind the pre-queue


@pytest.mark.timeout(240)
def test_a_scheduled_sale_with_abandoning_users(tmp_path: Path) -> None:
    state_dir = tmp_path / "stack"
    stack = DevUp(state_dir, "--admitters", "1")
    try:
        state = stack.wait_ready()
        created = waitroom(
            "--redis-url", state.redis_url, "event", "create", "sale1",
            "--rate", str(RATE), "--max-concurrent", "100", "--checkout-ttl", "5",
            "--idle-timeout", str(IDLE),
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        plot = tmp_path / "sale.png"
        # Later arrivals come at twice the admission rate: the queue is steady and backed up.
        sim = waitroom(
            "simulate", "--state-dir", str(state_dir), "--event", "sale1",
            "--users", str(USERS), "--opens-in", "8", "--before", str(BEFORE),
            "--abandon", str(ABANDON), "--arrival", "ramp", "--rate", str(2 * RATE),
            "--poll-interval", "1", "--checkout-delay", "0.05", "0.3", "--seed", "11",
            "--timeout", "120", "--json", "--plot", str(plot),
            timeout=180,
        )  # fmt: skip
        assert sim.returncode in (0, 4), sim.stderr[-8000:]  # 1: stuck (stacks in stderr)
        result = json.loads(sim.stdout)
        assert sim.returncode == 0, (result["problems"], sim.stderr[-2000:])
        assert result["clean"]
    except BaseException:
        cleanup(stack)
        raise
    assert stack.stop() == 0, stack.output

    abandoned, opening = result["abandoned"], result["opening"]
    # Everyone accounted for: the present users all admitted and told so, the abandoning ones
    # dropped, or admitted before their timeout ran out and their slot left to expire.
    assert result["joined"] == USERS and result["lost"] == 0
    assert abandoned["users"] == round(USERS * ABANDON)
    assert abandoned["unsettled"] == 0 and abandoned["other"] == 0
    assert abandoned["dropped"] + abandoned["admitted"] == abandoned["users"]
    assert result["admitted"] - abandoned["admitted"] == USERS - abandoned["users"]
    assert result["wait_seconds"]["count"] == USERS - abandoned["users"]
    # The abandoned are never admitted once absent for longer than the timeout: the only ones
    # admitted are pre-queue entrants drawn so early that they were reached within the timeout
    # of the draw (when every entrant counts as seen), never a later arrival.
    assert abandoned["admitted_late"] == 0
    assert abandoned["admitted"] == abandoned["admitted_prequeue"]
    assert abandoned["dropped"] > 0 and abandoned["present_dropped"] == 0
    # The pre-queue first, in the draw's order; arrival order after the opening.
    assert opening["drawn"] and opening["permutation"]
    assert opening["entrants"] == opening["ours"] == round(USERS * BEFORE)
    assert opening["prequeue_overtaken"] == 0 and opening["fifo_after_opening"] == 0
    assert result["fifo_violations"] == 0
    assert opening["verify"]["matches"] and opening["verify"]["seed_matches_commitment"]
    assert 0.3 < opening["out_of_join_order"] < 0.7  # a shuffle, not the join order
    # On this steady run the estimate at join is within 25% of the real wait for the median
    # user; a pre-queue entrant's, the expectation of a place drawn later, is only reported.
    errors = result["estimate_error"]
    assert errors["all"]["count"] == result["admitted"]
    assert errors["all"]["abs_p50"] < 0.25, errors
    assert errors["after_opening"]["abs_p50"] < 0.25, errors
    assert plot.read_bytes().startswith(b"\x89PNG")
