"""What a benchmark reports: a figure, the baseline measured in the same run, and the target.

The machines are shared and noisy, so a figure is always printed beside a baseline measured
moments before or after it on the same machine, and beside how busy the machine was: the load
generator's processes (client CPU) and everything else (other engineers' work).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Row:
    """One line of the results table.

    ``ratio`` is figure / baseline when both are numbers. ``met`` is None for a figure without
    a target (a context figure such as a latency at 80% of saturation).
    """

    bench: str
    name: str
    figure: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    met: bool | None = None
    client_cpu: float | None = None  # cores busy in the load generator's processes
    machine_cpu: float | None = None  # cores busy on the whole machine meanwhile
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.figure / self.baseline

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        return data


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _met(row: Row) -> str:
    if row.met is None:
        return ""
    return "met" if row.met else "NOT MET"


def table(rows: Sequence[Row]) -> str:
    """The results as a Markdown table (it reads well in a terminal too)."""
    header = (
        "| benchmark | figure | value | baseline | ratio | target | result "
        "| client CPU | machine CPU |"
    )
    lines = [header, "|" + "---|" * 9]
    for r in rows:
        baseline = f"{_number(r.baseline)} ({r.baseline_name})" if r.baseline is not None else "-"
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
        client = f"{r.client_cpu:.2f}" if r.client_cpu is not None else "-"
        machine = f"{r.machine_cpu:.2f}" if r.machine_cpu is not None else "-"
        lines.append(
            f"| {r.bench} | {r.name} | {_number(r.figure)} {r.unit} | {baseline} | {ratio} "
            f"| {r.target or '-'} | {_met(r)} | {client} | {machine} |"
        )
    return "\n".join(lines)


def details(rows: Sequence[Row]) -> str:
    """Each row's notes (what else was measured alongside), one line per row."""
    lines = []
    for r in rows:
        if r.notes:
            parts = ", ".join(f"{k}={_note(v)}" for k, v in r.notes.items())
            lines.append(f"- {r.bench} / {r.name}: {parts}")
    return "\n".join(lines)


def _note(value: Any) -> str:
    if isinstance(value, float):
        return _number(value)
    return str(value)


def to_json(rows: Sequence[Row], meta: dict[str, Any]) -> str:
    return json.dumps({"meta": meta, "rows": [r.to_json() for r in rows]}, indent=2)


def from_json(text: str) -> tuple[list[Row], dict[str, Any]]:
    """Rows and machine facts of a saved ``--json`` run."""
    data = json.loads(text)
    rows = []
    for raw in data["rows"]:
        raw.pop("ratio", None)
        rows.append(Row(**raw))
    return rows, data["meta"]


if __name__ == "__main__":
    # python -m bench.report RUN.json: the table of a saved run.
    import sys
    from pathlib import Path

    saved_rows, _ = from_json(Path(sys.argv[1]).read_text("utf-8"))
    print(table(saved_rows))
    print()
    print(details(saved_rows))
