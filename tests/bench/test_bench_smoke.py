"""The benchmark runner works end to end: one tiny benchmark, its figures, no timing asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def _run(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args, "--quick", "--json", "--silent"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_the_events_curve_has_a_point_per_event_count_and_the_idle_cost() -> None:
    rows = _run("events", "--scale", "0.001")["rows"]  # 1 and 10 events
    refills = [r for r in rows if r["name"].startswith("slot refill p99")]
    assert [r["name"].split("(")[1].split(" ")[0] for r in refills] == ["1", "10"]
    assert all(r["figure"] > 0 and r["notes"]["missed"] == 0 for r in refills)
    (idle,) = [r for r in rows if r["name"].startswith("admitter CPU")]
    assert idle["figure"] >= 0 and set(idle["notes"]) == {"1_events", "10_events"}


def test_the_streams_curve_reports_memory_and_latency_per_point() -> None:
    rows = _run("streams", "--scale", "0.01")["rows"]  # 10 and 50 streams
    memory = [r for r in rows if r["name"].startswith("API memory")]
    latency = [r for r in rows if r["name"].startswith("admission -> stream")]
    assert len(memory) == len(latency) == 2
    assert all(r["notes"]["errors"] == 0 and r["notes"]["missed"] == 0 for r in memory)
    assert all(r["figure"] > 0 for r in latency)


def test_the_joins_curve_compares_many_events_with_one() -> None:
    rows = _run("joins")["rows"]
    assert [r["name"].rsplit(",", 1)[1].strip() for r in rows] == [
        "1 event at once",
        "100 events at once",
    ]
    assert all(r["figure"] > 0 and r["notes"]["errors"] == 0 for r in rows)
    assert rows[0]["ratio"] == 1.0


def test_join_latency_at_a_fixed_rate_reports_what_was_achieved() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.join_latency", "--quick", "200"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (line,) = done.stdout.splitlines()
    assert line.startswith("200/s offered: ") and line.endswith("errors 0"), line
    achieved = float(line.split(": ")[1].split("/s")[0].replace(",", ""))
    assert 150 <= achieved <= 250, line
