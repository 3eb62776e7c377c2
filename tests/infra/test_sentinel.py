"""A master killed with kill -9 mid-sale, and Sentinel promoting a replica: every process
follows the new master within seconds and the sale goes on, without a restart.

Redis replicates asynchronously, so a failover can take back the last writes the master
acknowledged. The test prints what this run lost, with and without
``WAITROOM_REDIS_WAIT_REPLICAS``, and asserts only what is guaranteed: with the wait, no join
the API acknowledged is lost, and the recovery guard finds nothing lost either.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from infra_support import Sale, create_events, process_env, read_records, unique_tag

from shared.sessions import Status
from waitroom_dev.redis_infra import sentinel_group

CAP = 5
BEFORE_KILL = 25
AFTER_PROMOTION = 25
#: Seconds between two joins: a steady crowd, not a flood the checkout must then drain.
PACE = 0.02


@pytest.mark.parametrize("wait_replicas", [0, 1])
def test_a_sale_goes_on_when_sentinel_promotes_a_replica(
    wait_replicas: int, bootstrap: str, workdir: Path
) -> None:
    tag = unique_tag()
    event = f"ev-{tag}"
    # Two replicas: after the promotion one is left, so a wait for one replica can succeed.
    with sentinel_group(workdir / "redis", replicas=2) as group:
        redis_env = {
            "WAITROOM_REDIS_MODE": "sentinel",
            "WAITROOM_REDIS_URL": "redis://sentinel-managed/0",
            "WAITROOM_REDIS_SENTINELS": group.sentinel_addresses,
            "WAITROOM_REDIS_MASTER_NAME": group.master_name,
            "WAITROOM_REDIS_WAIT_REPLICAS": str(wait_replicas),
            "WAITROOM_REDIS_WAIT_TIMEOUT_MS": "1000",
        }
        env = process_env(redis_env, bootstrap, tag)
        create_events(env, [event], max_concurrent=CAP, rate=500.0)
        sale = Sale(env, workdir, [event]).start()
        stop = threading.Event()
        errors: list[BaseException] = []

        def joiner() -> None:
            i = 0
            try:
                while not stop.is_set():
                    sale.join(event, f"user-{i}")
                    i += 1
                    stop.wait(PACE)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=joiner, daemon=True)
        thread.start()
        try:
            sale.wait_until(
                lambda: len(sale.joined) >= BEFORE_KILL and len(sale.ready) >= CAP,
                "joins and admissions before the kill",
            )
            old = group.kill_master()
            joined_at_kill, ready_at_kill = len(sale.joined), len(sale.ready)
            new_port = group.wait_for_promotion(old.port)
            sale.wait_until(
                lambda: len(sale.joined) >= joined_at_kill + AFTER_PROMOTION,
                "joins after the promotion",
            )
            stop.set()
            thread.join(60)
            sale.wait_until(lambda: len(sale.ready) > ready_at_kill + CAP, "admissions resuming")
            sessions = {j.session_id: event for j in sale.joined}

            def settled() -> bool:
                records = read_records(env, sessions).values()
                return all(r is None or r.status is Status.COMPLETED for r in records)

            sale.wait_until(settled, "every surviving session through checkout")
            records = read_records(env, sessions)
        finally:
            stop.set()
            codes = sale.stop()
    assert not errors, errors
    assert codes == {"api": 0, "admitter": 0, "consumer": 0}, sale.logs()
    lost = [sid for sid, record in records.items() if record is None]
    print(
        f"\nWAIT {wait_replicas}: master {old.port} killed after {joined_at_kill} joins and "
        f"{ready_at_kill} admissions, {new_port} promoted; {len(sale.joined)} joins "
        f"acknowledged, {len(lost)} of them lost; {sale.retries} UNAVAILABLE answers retried; "
        f"{sale.ready_copies - len(sale.ready)} queue.ready repeats"
    )
    (admitter,) = [p.log() for p in sale.processes if p.name == "admitter"]
    behind = f"Redis is behind Kafka for event {event}"
    print(f"recovery guard: {'rebuilt the event' if behind in admitter else 'nothing lost'}")
    if wait_replicas:
        assert lost == [], "a join acknowledged after WAIT was lost in the failover"
        # Kafka got nothing a replica did not hold first, and the replica holding the most was
        # promoted: the guard must not call it behind (it did for a relay's deletion still in
        # flight, before regression() counted records still in the outbox).
        assert behind not in admitter, admitter[-3000:]
    survivors = [sid for sid, record in records.items() if record is not None]
    assert set(survivors) <= set(sale.ready), "a surviving user was never admitted"
