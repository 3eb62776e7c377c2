"""The benchmark runner works end to end: one tiny benchmark, its figures, no timing asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_memory_benchmark_reports_a_figure_a_baseline_and_a_verdict() -> None:
    # 1,000,000 users scaled down to 2,000: seconds, not minutes.
    done = subprocess.run(
        [sys.executable, "-m", "bench", "memory", "--scale", "0.002", "--json", "--silent"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["meta"]["cpus"] >= 1
    (row,) = report["rows"]
    assert row["bench"] == "memory"
    assert "2,000 queued" in row["name"]
    assert row["figure"] > 0 and row["baseline"] > 0
    assert row["ratio"] == row["figure"] / row["baseline"]
    assert isinstance(row["met"], bool)
    assert row["notes"]["refused"] == 0


def _rows(name: str, scale: str) -> list[dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-m", "bench", name, "--quick", "--scale", scale, "--json", "--silent"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows: list[dict[str, object]] = json.loads(done.stdout)["rows"]
    return rows


def test_cluster_and_durability_benchmarks_report_figures_and_baselines() -> None:
    for name in ("cluster", "durability"):
        rows = _rows(name, "0.05")
        steps = [str(r["name"]).split(":")[0].split()[0] for r in rows]
        assert steps == ["join", "admit", "finish"]
        for row in rows:
            assert row["bench"] == name
            assert row["figure"] > 0 and row["baseline"] > 0  # type: ignore[operator]
