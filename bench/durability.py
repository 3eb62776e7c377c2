"""What waiting for a replica costs: the same sale with ``WAITROOM_REDIS_WAIT_REPLICAS=1`` and
without, against one master with one replica on this machine, same run.

Joins and leaves answer a user and admissions feed the outbox, so with the setting each waits
(``WAIT 1``) for the replica after its script; checkout outcomes wait once per pipelined batch.
The figure is users per second with the wait, the baseline without. On one machine the replica
is a loopback hop away, so this is the floor of the cost: across a network each wait adds a
round trip to the replica.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from bench.report import Row
from bench.runner import Options
from bench.sale import SaleFigures, run_sale
from shared.settings import CommonSettings
from waitroom_dev.redis_infra import SentinelGroup

EVENTS = ["durable-a", "durable-b"]


def run(opts: Options) -> list[Row]:
    users = opts.size(20_000, 2_000, minimum=len(EVENTS))
    with contextlib.ExitStack() as stack:
        workdir = opts.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        group = SentinelGroup(workdir, watchers=0).start()
        stack.callback(group.stop)
        url = f"redis://127.0.0.1:{group.master().port}/0"
        figures: dict[int, SaleFigures] = {}
        # Off, on, off, on: each figure is the better of two runs, so a burst of other work
        # on the shared machine during one run does not decide the ratio.
        for round_ in range(2):
            for wait in (0, 1):
                settings = CommonSettings(redis_url=url, redis_wait_replicas=wait)
                events = [f"{e}-{wait}-{round_}" for e in EVENTS]
                got = run_sale(settings, events, users, concurrency=32)
                opts.say(f"durability: WAIT {wait}: {got}")
                best = figures.get(wait)
                figures[wait] = got if best is None or got.join_per_s > best.join_per_s else best
    return _rows(figures[0], figures[1])


def _rows(off: SaleFigures, on: SaleFigures) -> list[Row]:
    rows = []
    for step, unit in (("join", "joins/s"), ("admit", "admissions/s"), ("finish", "outcomes/s")):
        rows.append(
            Row(
                bench="durability",
                name=f"{step} with WAIT 1 replica: {on.users:,} users",
                figure=round(getattr(on, f"{step}_per_s")),
                unit=unit,
                baseline=round(getattr(off, f"{step}_per_s")),
                baseline_name="same, WAIT off",
                notes={"replica": "same machine (loopback): the floor of the cost"},
            )
        )
    return rows
