"""``python -m bench recovery`` runs end to end at a tiny size: its rows, baselines and verdicts
are there (no timing is asserted: the figures are the benchmark's to report)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
def test_recovery_benchmark_reports_the_window_and_the_rebuild() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "recovery", "--quick", "--scale", "0.2", "--json", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=230,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(done.stdout)["rows"]
    names = [r["name"] for r in rows]
    assert [n.split(", checkout full")[0] for n in names[:2]] == [
        "join acknowledged -> queue.joined readable on Kafka"
    ] * 2
    assert names[2] == "rebuild 1,000 sessions from Kafka after Redis restarted empty"
    for row in rows:
        assert row["figure"] > 0 and row["baseline"] > 0
        assert row["ratio"] == row["figure"] / row["baseline"]
    assert isinstance(rows[1]["met"], bool) and isinstance(rows[2]["met"], bool)
    assert rows[2]["notes"]["records"] >= 1000
