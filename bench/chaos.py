"""``python -m bench chaos``: the long chaos run, a big sale through a schedule of faults.

The same run as the test suite's short one (``tests/chaos/``), bigger and longer: it prints the
invariant table (invariant, checked, violations) and the fault log, and saves the run (every
client's events, every Kafka record of the event, Redis at the end, the samples, the process
exits, the logs) under ``runs/chaos-<time>/``. Exit status: 0 when no invariant broke, 4 when
one did, 1 when the run itself failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tests.chaos.faults import ALL, parse_faults
from tests.chaos.invariants import table
from tests.chaos.run import RunConfig, run

RET_BROKEN = 4


def _say(text: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench chaos", description=__doc__)
    parser.add_argument("--users", type=int, default=3000, help="users in the sale (3000)")
    parser.add_argument(
        "--faults",
        default="working",
        help=f"all, working (default), loss, none, or a comma list of: {', '.join(ALL)}",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the crowd and checkout")
    parser.add_argument("--rounds", type=int, default=3, help="times the fault list is run")
    parser.add_argument("--cap", type=int, default=50, help="users in checkout at once")
    parser.add_argument(
        "--arrival", type=float, default=20.0, help="seconds over which users arrive"
    )
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where runs are saved")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    try:
        faults = tuple(parse_faults(args.faults))
    except ValueError as exc:
        parser.error(str(exc))
    config = RunConfig(
        users=args.users,
        faults=faults,
        seed=args.seed,
        cap=args.cap,
        rate=max(200.0, args.cap * 10.0),
        arrival_seconds=args.arrival,
        first_fault_seconds=2.0,
        fault_gap_seconds=2.0,
        pause_seconds=3.0,
        rounds=args.rounds,
        drain_seconds=300.0,
        not_found_patience=30.0,
    )
    directory = args.runs_dir / f"chaos-{time.strftime('%Y%m%d-%H%M%S')}"
    _say(f"chaos: {args.users} users, faults {', '.join(faults) or 'none'} x{args.rounds}")
    _say(f"saving under {directory}")
    result = run(config, directory / "work", _say)
    result.save(directory)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(f"\nChaos run: {args.users} users, seed {args.seed}, {result.seconds:.0f} s.")
        print(f"Saved in {directory}.\n")
        print(table(result.rows))
        print()
        print(result.fault_table())
    return RET_BROKEN if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
