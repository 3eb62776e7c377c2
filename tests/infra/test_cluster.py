"""The waitroom on a three-master Redis Cluster: events spread over the shards by their hash
tag, a whole sale through the API, the admitter and the consumer, and a slot moved by
``redis-cli --cluster reshard`` while users join."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from infra_support import (
    Sale,
    create_events,
    events_on_every_shard,
    overlap,
    process_env,
    read_records,
    unique_tag,
)
from redis.crc import key_slot

from shared import keys
from shared.ids import ticket_of_session
from shared.sessions import Status
from waitroom_dev.redis_infra import Cluster

CAP = 3
USERS_PER_EVENT = 15


def slot_of(event: str) -> int:
    return key_slot(keys.config(event).encode())


def test_a_sale_on_every_shard_keeps_the_cap_and_the_order_and_loses_nobody(
    cluster: Cluster, cluster_env: dict[str, str], bootstrap: str, workdir: Path
) -> None:
    events = events_on_every_shard(lambda e: cluster.slot_owner(slot_of(e)), 3)
    assert len({cluster.slot_owner(slot_of(e)) for e in events}) == 3
    env = process_env(cluster_env, bootstrap, unique_tag())
    create_events(env, events, max_concurrent=CAP, rate=200.0)
    sale = Sale(env, workdir, events).start()
    try:
        for i in range(USERS_PER_EVENT):
            for event in events:  # interleaved, so every shard works at once
                sale.join(event, f"user-{i}")
        total = USERS_PER_EVENT * len(events)
        sale.wait_until(lambda: len(sale.ready) == total, f"{total} users admitted")
        sessions = {j.session_id: j.event for j in sale.joined}
        sale.wait_until(
            lambda: all(
                r is not None and r.status is Status.COMPLETED
                for r in read_records(env, sessions).values()
            ),
            "every checkout completed",
        )
    finally:
        codes = sale.stop()
    assert codes == {"api": 0, "admitter": 0, "consumer": 0}, sale.logs()
    records = read_records(env, sessions)
    for event in events:
        mine = [j for j in sale.joined if j.event == event]
        # Joined one after another: tickets 1..n in join order, nobody twice.
        assert [ticket_of_session(j.session_id) for j in mine] == list(
            range(1, USERS_PER_EVENT + 1)
        )
        admitted = [records[j.session_id] for j in mine]
        assert all(r is not None for r in admitted)
        times = [r.admitted_ms for r in admitted if r is not None]
        assert times == sorted(times), f"{event}: admitted out of join order"
        assert overlap([r for r in admitted if r is not None]) <= CAP, f"{event}: over the cap"
    assert set(sale.ready) == set(sessions), "someone was never admitted"


def test_joins_ride_through_a_slot_moved_by_reshard(
    cluster: Cluster, cluster_env: dict[str, str], bootstrap: str, workdir: Path
) -> None:
    # redis-cli --cluster reshard moves the source's lowest slots first: pick an event in the
    # lowest slot of one master, so moving one slot moves this event.
    source = cluster.ports[0]
    lowest = min(first for first, _, port in cluster.slots() if port == source)
    tag = unique_tag()
    event = next(e for e in (f"ev-{tag}-{i}" for i in range(10**6)) if slot_of(e) == lowest)
    target = cluster.ports[1]
    env = process_env(cluster_env, bootstrap, tag)
    create_events(env, [event])
    sale = Sale(env, workdir, [event]).start(admitter=False, consumer=False)
    stop = threading.Event()
    errors: list[BaseException] = []

    def joiner() -> None:
        i = 0
        try:
            while not stop.is_set() or i < 50:
                sale.join(event, f"user-{i}")
                i += 1
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=joiner, daemon=True)
    thread.start()
    try:
        sale.wait_until(lambda: len(sale.joined) >= 20, "joins before the move")
        before = len(sale.joined)
        output = cluster.reshard(source, target, 1)
        moved_at = len(sale.joined)
        sale.wait_until(lambda: len(sale.joined) >= moved_at + 20, "joins after the move")
        stop.set()
        thread.join(60)
    finally:
        stop.set()
        codes = sale.stop()
    assert not errors, errors
    assert cluster.slot_owner(lowest) == target, output
    assert codes["api"] == 0, sale.logs()
    print(
        f"\nreshard of slot {lowest}: {before} joins before, {len(sale.joined)} in all, "
        f"{sale.retries} UNAVAILABLE answers retried"
    )
    # Nobody lost, nobody twice: every join is one place, tickets 1..n in join order.
    tickets = [ticket_of_session(j.session_id) for j in sale.joined]
    assert tickets == list(range(1, len(sale.joined) + 1))
    assert [j.position for j in sale.joined] == tickets  # nobody admitted: place = ticket
    records = read_records(env, {j.session_id: event for j in sale.joined})
    assert all(r is not None and r.status is Status.QUEUED for r in records.values())


def test_operator_commands_work_against_the_cluster(
    cluster: Cluster, cluster_env: dict[str, str]
) -> None:
    env = {**os.environ, **cluster_env, "WAITROOM_JWT_SECRET": "x" * 40}
    events = events_on_every_shard(lambda e: cluster.slot_owner(slot_of(e)), 3)

    def waitroom(*args: str) -> subprocess.CompletedProcess[str]:
        code = "from waitroom_cli.main import cli; cli()"
        return subprocess.run(
            [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60
        )

    for event in events:
        assert waitroom("event", "create", event).returncode == 0
    paused = waitroom("event", "pause", events[1])
    assert paused.returncode == 0, paused.stderr
    listed = json.loads(waitroom("event", "list", "--json").stdout)
    assert {e["event_id"] for e in listed} >= set(events)
    shown = waitroom("event", "show", events[2], "--json")
    assert shown.returncode == 0, shown.stderr
    # No admitter runs: the check reads the heartbeats and says so (4), it does not crash.
    assert waitroom("admitter", "check").returncode == 4
    assert waitroom("consumer", "check").returncode == 4
