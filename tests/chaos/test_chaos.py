"""The short chaos run: a real stack, a 300-user sale, every fault the waitroom rides out.

Two API processes on one SO_REUSEPORT port, three admitters, one consumer, Redis with an AOF and
the broker, each killed or frozen once while the sale runs; then the sale drains and every
invariant of ``tests/chaos/invariants.py`` is checked. Nothing is timed: the waits are bounds.
The long run is ``python -m bench chaos``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.faults import LOSS, WORKING
from tests.chaos.invariants import table
from tests.chaos.run import RunConfig, RunResult, run


def _report(result: RunResult) -> str:
    return f"\n{table(result.rows)}\n\n{result.fault_table()}\n{result.notes}\nlogs: see tmp_path"


@pytest.mark.timeout(300)
def test_a_sale_through_every_working_fault_keeps_every_invariant(tmp_path: Path) -> None:
    result = run(RunConfig(users=300, faults=WORKING, seed=7), tmp_path)

    injected = [e["fault"] for e in result.faults.entries]
    assert injected == list(WORKING)
    assert result.violations == 0, _report(result)
    # The run exercised what it claims: killed processes were started again, users were
    # admitted, left and finished, and the cap was reached.
    starts = result.notes["process_starts"]
    assert starts["api-0"] == starts["admitter-0"] == starts["consumer-0"] == 2
    assert {"COMPLETED", "FAILED", "EXPIRED", "CANCELLED"} <= {
        rec.status.name for rec in result.evidence.redis.sessions.values()
    }
    assert max(result.evidence.samples) == 20
    assert len(result.evidence.redis.sessions) == 300


@pytest.mark.timeout(300)
def test_redis_losing_acknowledged_writes_is_recovered_from_kafka(tmp_path: Path) -> None:
    """The AOF cut back as an OS crash leaves it, then Redis restarted empty.

    After the cut the admitters find the event behind Kafka and rebuild it; after the empty
    restart the run calls ``waitroom recover --all --json`` as an operator would. Each fault
    ends when ``waitroom event show`` reports the recovery ok. Then every invariant holds:
    only joins that never reached Kafka may be missing, and they are counted apart.
    """
    result = run(RunConfig(users=200, faults=LOSS, seed=11, first_fault_seconds=1.5), tmp_path)

    assert [e["fault"] for e in result.faults.entries] == list(LOSS)
    assert result.violations == 0, _report(result)
    assert all("recovery ok" in e["result"] for e in result.faults.entries), _report(result)
    (emptied,) = [r for r in result.notes["recoveries"] if r["fault"] == "redis_empty"]
    (report,) = [r for r in emptied["reports"] if r["event_id"] == result.event_id]
    assert report["action"] == "restored"
    assert report["config_rebuilt"]
    # The sale went on after both losses: everyone acknowledged ended in a final status.
    assert len(result.evidence.redis.sessions) + len(result.evidence.lost_before_kafka()) == len(
        result.evidence.acked()
    )
