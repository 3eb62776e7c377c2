"""``python -m bench.plot RUN.json... [--out docs/img]``: draw the scale curves as PNGs.

Reads the JSON of ``python -m bench events|streams|joins --json`` (one file or several) and
writes ``scale-events.png``, ``scale-streams.png`` and ``scale-joins.png`` for the curves it
finds, each point labelled with its value.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

_COUNT = re.compile(r"\(([\d,]+) (?:events|streams)")


def _count(name: str) -> int:
    found = _COUNT.search(name)
    if found is None:
        raise ValueError(f"no count in {name!r}")
    return int(found.group(1).replace(",", ""))


def _rows(paths: list[Path]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in paths:
        rows += json.loads(path.read_text("utf-8"))["rows"]
    return rows


def _curve(ax: Any, xs: list[int], ys: list[float], title: str, ylabel: str, fmt: str) -> None:
    """A curve with each point labelled; a point not measured (inf, NaN) is marked as such."""
    shown = [y if math.isfinite(y) else math.nan for y in ys]
    ax.plot(xs, shown, marker="o")
    top = max((y for y in shown if not math.isnan(y)), default=1.0) or 1.0
    for x, y in zip(xs, shown, strict=True):
        label, at = (fmt.format(y), y) if not math.isnan(y) else ("not measured", top)
        ax.annotate(label, (x, at), textcoords="offset points", xytext=(0, 6), ha="center")
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:,}" for x in xs])
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0, top=top * 1.25)
    ax.grid(alpha=0.3)


def events(rows: list[dict[str, Any]], out: Path) -> Path | None:
    refill = sorted(
        (_count(r["name"]), r)
        for r in rows
        if r["bench"] == "events" and "(" in r["name"] and r["name"].startswith("slot refill")
    )
    if not refill:
        return None
    xs = [n for n, _ in refill]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    _curve(left, xs, [r["figure"] for _, r in refill], "Slot refill p99", "ms", "{:.1f}")
    left.set_xlabel("configured events (1 busy)")
    idle = [r["notes"]["idle_admitter_cpu"] * 100 for _, r in refill]
    _curve(right, xs, idle, "Admitter CPU, every event idle", "% of a core", "{:.1f}")
    right.axhline(5, color="red", linestyle="--", linewidth=1, label="target 5%")
    right.legend()
    right.set_xlabel("configured events")
    return _save(fig, out / "scale-events.png")


def streams(rows: list[dict[str, Any]], out: Path) -> Path | None:
    memory = sorted(
        (_count(r["name"]), r) for r in rows if r["bench"] == "streams" and r["unit"] == "B"
    )
    latency = sorted(
        (_count(r["name"]), r) for r in rows if r["bench"] == "streams" and r["unit"] == "s"
    )
    if not memory:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    xs = [n for n, _ in memory]
    _curve(
        left,
        xs,
        [r["figure"] / 1024 for _, r in memory],
        "API memory per open stream",
        "KiB",
        "{:.1f}",
    )
    left.set_xlabel("open streams, one API process")
    xs = [n for n, _ in latency]
    _curve(
        right,
        xs,
        [r["figure"] for _, r in latency],
        "Admission -> stream update p99 (100/s)",
        "s",
        "{:.2f}",
    )
    right.axhline(1, color="red", linestyle="--", linewidth=1, label="target at 10,000: 1 s")
    right.legend()
    right.set_xlabel("open streams, one API process")
    return _save(fig, out / "scale-streams.png")


def joins(rows: list[dict[str, Any]], out: Path) -> Path | None:
    found = [r for r in rows if r["bench"] == "joins"]
    if not found:
        return None
    fig, ax = plt.subplots(figsize=(5, 4))
    labels = [r["name"].rsplit(",", 1)[1].strip().removesuffix(" at once") for r in found]
    values = [r["figure"] for r in found]
    bars = ax.bar(labels, values)
    ax.bar_label(bars, [f"{v:,.0f}/s" for v in values])
    ax.set_title("JoinQueue/s, one API process")
    ax.set_ylabel("joins per second")
    ax.set_ylim(top=max(values) * 1.2)
    return _save(fig, out / "scale-joins.png")


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plot", description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path, help="JSON from python -m bench ... --json")
    parser.add_argument("--out", type=Path, default=Path("docs/img"), help="where the PNGs go")
    args = parser.parse_args(argv)
    rows = _rows(args.runs)
    for draw in (events, streams, joins):
        written = draw(rows, args.out)
        if written is not None:
            print(written)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
