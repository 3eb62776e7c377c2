"""``python -m bench NAME|all [--quick] [--json]``: run benchmarks, print the results table.

``python -m bench chaos [--users N] [--faults ...] [--seed S] [--json]`` is the long chaos run
(see ``bench/chaos.py``).

Each benchmark starts its own Redis and broker on free local ports (and whichever waitroom
processes it needs) and stops them when it ends. Exit status: 0 when every benchmark ran (met
or not), 1 when one failed to run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.report import Row, details, table, to_json
from bench.runner import Benchmark, Options

#: name -> module with ``run(Options) -> list[Row]`` (or ``module:function``), in the order
#: ``all`` runs them.
BENCHMARKS = {
    "memory": "bench.memory",
    "status": "bench.status",
    "join": "bench.join",
    "admission": "bench.admission",
    "refill": "bench.refill",
    "fanout": "bench.fanout",
    "consumer": "bench.consumer",
    "cluster": "bench.cluster",
    "durability": "bench.durability",
    "recovery": "bench.recovery",
    "draw": "bench.draw",
    "events": "bench.scale:run_events",
    "streams": "bench.scale:run_streams",
    "joins": "bench.scale:run_joins",
}


def machine() -> dict[str, Any]:
    load1, load5, _ = os.getloadavg()
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(load1, 2), round(load5, 2)],
    }


def load_benchmark(name: str) -> Benchmark:
    module, _, function = BENCHMARKS[name].partition(":")
    run: Benchmark = getattr(importlib.import_module(module), function or "run")
    return run


def run_one(name: str, opts: Options) -> list[Row]:
    opts.say(f"{name}: starting")
    started = time.monotonic()
    try:
        rows = load_benchmark(name)(opts)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        return [Row(bench=name, name=f"failed: {exc!r}"[:200], figure=float("nan"), unit="")]
    opts.say(f"{name}: done in {time.monotonic() - started:.0f}s")
    return rows


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["chaos"]:
        # The chaos run has options of its own (users, faults, seed) and is never part of
        # `all`: it judges correctness under faults, not speed.
        from bench.chaos import main as chaos

        return chaos(args_in[1:])
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", choices=[*BENCHMARKS, "all"], help="which benchmark")
    parser.add_argument("--quick", action="store_true", help="small sizes: all in < 3 min")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every size by this (default 1)"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs here")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="sample the server processes with py-spy during each measurement, into DIR",
    )
    parser.add_argument("-q", "--silent", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    opts = Options(
        quick=args.quick,
        scale=args.scale,
        workdir=args.workdir,
        verbose=not args.silent,
        profile_dir=args.profile,
    )
    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    meta = machine()
    started = time.monotonic()
    rows: list[Row] = []
    for name in names:
        new = run_one(name, opts)
        rows.extend(new)
        if not args.json and len(names) > 1:
            print(table(new), flush=True)
    meta["seconds"] = round(time.monotonic() - started, 1)
    meta["quick"] = args.quick
    if args.json:
        print(to_json(rows, meta))
    else:
        print()
        print(
            f"Machine: {meta['cpus']} CPUs ({meta['cpu_model']}), Python {meta['python']}, "
            f"load average at start {meta['load_average_at_start']}; {meta['seconds']} s."
        )
        print(table(rows))
        extra = details(rows)
        if extra:
            print("\n" + extra)
    failed = [r for r in rows if r.figure != r.figure]  # NaN marks a benchmark that failed
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
