"""A master killed with kill -9 mid-sale, and Sentinel promoting a replica: every process
follows the new master within seconds and the sale goes on, without a restart.

Redis replicates asynchronously, so a failover can take back the last writes the master
acknowledged. The test prints what this run lost, with and without
``WAITROOM_REDIS_WAIT_REPLICAS``, and asserts only what is guaranteed: with the wait, no join
the API acknowledged is lost, and the recovery guard finds nothing lost either.

A second failover right after the first demotes the replica just promoted, and what it took
meanwhile is lost when it becomes a replica: checkout outcomes among them, whose offsets were
committed. The sale must go on all the same (the consumer applies them again from Kafka).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from infra_support import Sale, create_events, process_env, sale_survives_a_failover, unique_tag

from waitroom_dev.redis_infra import SentinelGroup, sentinel_group

CAP = 5


@pytest.mark.parametrize("wait_replicas", [0, 1])
def test_a_sale_goes_on_when_sentinel_promotes_a_replica(
    wait_replicas: int, bootstrap: str, workdir: Path
) -> None:
    # Two replicas: after the promotion one is left, so a wait for one replica can succeed.
    with sentinel_group(workdir / "redis", replicas=2) as group:
        sale = start_sale(group, bootstrap, workdir, wait_replicas)
        event = sale.events[0]

        def failover() -> str:
            old = group.kill_master()
            new_port = group.wait_for_promotion(old.port)
            return f"WAIT {wait_replicas}: master {old.port} killed, {new_port} promoted"

        records = sale_survives_a_failover(sale, failover)
    lost = [sid for sid, record in records.items() if record is None]
    print(f"{sale.ready_copies - len(sale.ready)} queue.ready repeats")
    (admitter,) = [p.log() for p in sale.processes if p.name == "admitter"]
    behind = f"Redis is behind Kafka for event {event}"
    print(f"recovery guard: {'rebuilt the event' if behind in admitter else 'nothing lost'}")
    if wait_replicas:
        assert lost == [], "a join acknowledged after WAIT was lost in the failover"
        # Kafka got nothing a replica did not hold first, and the replica holding the most was
        # promoted: the guard must not call it behind (it did for a relay's deletion still in
        # flight, before regression() counted records still in the outbox).
        assert behind not in admitter, admitter[-3000:]


@pytest.mark.parametrize("gap", [0.0, 1.0])
def test_a_sale_goes_on_through_two_failovers_in_a_row(
    gap: float, bootstrap: str, workdir: Path
) -> None:
    """What a Sentinel quick to call a new master down does (seen with down-after-milliseconds
    1000 on a busy machine): the master killed, and ``gap`` seconds after the promotion the
    replica just promoted is demoted by a second failover. Before the consumer applied lost
    outcomes again, the sale stopped admitting in 3 of 4 runs (gaps of 0, 0.5, 1 and 2 s): the
    slots of users whose checkout was done stayed taken."""
    with sentinel_group(workdir / "redis", replicas=2) as group:
        sale = start_sale(group, bootstrap, workdir, wait_replicas=0)

        def failovers() -> str:
            old = group.kill_master()
            first = group.wait_for_promotion(old.port)
            time.sleep(gap)
            group.force_failover()
            second = group.wait_for_promotion(first)
            return f"master {old.port} killed, {first} promoted, then {second} {gap:g} s later"

        sale_survives_a_failover(sale, failovers)


def start_sale(group: SentinelGroup, bootstrap: str, workdir: Path, wait_replicas: int) -> Sale:
    """One event's sale through all three processes, finding the master through ``group``."""
    tag = unique_tag()
    event = f"ev-{tag}"
    redis_env = {
        **group.env(),
        "WAITROOM_REDIS_WAIT_REPLICAS": str(wait_replicas),
        "WAITROOM_REDIS_WAIT_TIMEOUT_MS": "1000",
    }
    env = process_env(redis_env, bootstrap, tag)
    create_events(env, [event], max_concurrent=CAP, rate=500.0)
    return Sale(env, workdir, [event]).start()
