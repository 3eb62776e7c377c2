"""A sale across a three-master Redis Cluster against the same sale on one Redis, same run.

Six events spread over the shards by their hash tag; the same joins, admissions and checkout
outcomes go to one ``redis-server`` (the baseline) and to three in a cluster, through
``shared.scripts`` as the processes send them. The figure is users per second through each
step on the cluster, the baseline the same on one node.

What limits it here: one client process drives both, and on a 2-core machine the client (the
Python side of every script call) is the bottleneck, not Redis; a cluster adds slot routing in
the client and spreads Redis's work over three processes that share the same two cores. A
cluster buys capacity (memory, many events' Redis CPU) and failover, not one event's speed:
one event always lives on one shard.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from redis.crc import key_slot

from bench.report import Row
from bench.runner import Options
from bench.sale import SaleFigures, run_sale
from shared import keys
from shared.settings import CommonSettings
from waitroom_dev.redis_infra import redis_cluster
from waitroom_dev.services import redis_service

EVENTS = [f"sale-{i}" for i in range(6)]


def run(opts: Options) -> list[Row]:
    users = opts.size(60_000, 3_000, minimum=len(EVENTS))
    with contextlib.ExitStack() as stack:
        workdir = opts.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        single = redis_service(workdir / "single" if opts.workdir else workdir).start()
        stack.callback(single.stop)
        (workdir / "cluster").mkdir(parents=True, exist_ok=True)
        cluster = stack.enter_context(redis_cluster(workdir / "cluster"))
        shards = {cluster.slot_owner(key_slot(keys.config(e).encode())) for e in EVENTS}
        opts.say(f"cluster: {users} users over {len(EVENTS)} events on {len(shards)} shards")
        one = CommonSettings(redis_url=f"redis://127.0.0.1:{single.port}/0")
        many = CommonSettings(redis_url=cluster.url, redis_mode="cluster")
        base = run_sale(one, EVENTS, users)
        opts.say(f"cluster: one node {base}")
        spread = run_sale(many, EVENTS, users)
        opts.say(f"cluster: three shards {spread}")
    return _rows(base, spread, len(shards))


def _rows(base: SaleFigures, spread: SaleFigures, shards: int) -> list[Row]:
    rows = []
    for step, unit in (("join", "joins/s"), ("admit", "admissions/s"), ("finish", "outcomes/s")):
        figure = getattr(spread, f"{step}_per_s")
        baseline = getattr(base, f"{step}_per_s")
        rows.append(
            Row(
                bench="cluster",
                name=f"{step}: {spread.users:,} users, {len(EVENTS)} events on {shards} shards",
                figure=round(figure),
                unit=unit,
                baseline=round(baseline),
                baseline_name="same sale, one Redis",
                notes={"limit": "one client process on a 2-core machine: the client, not Redis"},
            )
        )
    return rows
