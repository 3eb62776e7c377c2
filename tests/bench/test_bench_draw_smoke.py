"""The draw benchmark runs end to end at a tiny scale: its figures and verdicts, no timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_draw_benchmark_reports_the_longest_call_and_bytes_per_entrant() -> None:
    # 1,000,000 entrants scaled down to 2,000.
    done = subprocess.run(
        [sys.executable, "-m", "bench", "draw", "--scale", "0.002", "--json", "--silent"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    longest, memory = json.loads(done.stdout)["rows"]
    assert "2,000 entrants" in longest["name"] and longest["figure"] > 0
    assert longest["notes"]["draw_script_calls"] >= 2  # at least one write and the finish
    assert "2,000 drawn" in memory["name"]
    assert memory["figure"] > 0 and memory["baseline"] > 0
    assert isinstance(longest["met"], bool) and isinstance(memory["met"], bool)
