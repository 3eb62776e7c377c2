"""Redis losing its last second: an OS crash with ``appendfsync everysec`` cuts the AOF back.

The test records the AOF's size at a point, does more work (relayed to Kafka), freezes the
admitter so the last joins never reach Kafka, kills Redis with -9 and cuts its AOF back to the
recorded size, as an OS crash would leave it. Redis starts again, behind Kafka: joins are
refused until the admitter has checked it, and the admitter rebuilds the event from Kafka.
"""

from __future__ import annotations

import json
import signal
import time
from collections import defaultdict

import pytest
from recovery_support import (
    Stack,
    complete,
    create_event,
    outbox_empty,
    run,
    snapshot,
    tickets,
    verified,
    wait_until,
)

from shared.errors import Code, WaitroomError
from shared.messages import QUEUE_JOINED, QUEUE_READY
from shared.recovery.reader import Record, read_to_end
from shared.scripts import Scripts
from shared.sessions import Status
from shared.settings import CommonSettings, KafkaClientSettings

SLOTS = 5


def _ready(stack: Stack, event_id: str, sids: list[str]) -> list[str]:
    result = run(stack.redis.url, lambda s: s.status(event_id, sids))
    return [v.session_id for v in result.sessions if v.record and v.record.status is Status.READY]


def _join(stack: Stack, event_id: str, names: range) -> list[str]:
    async def body(s: Scripts) -> list[str]:
        return [(await s.join(event_id, f"user-{i}")).session_id for i in names]

    return run(stack.redis.url, body)


def _kafka(stack: Stack, event_id: str) -> dict[str, list[dict[str, object]]]:
    """The event's queue.joined and queue.ready messages on Kafka, by topic."""
    found: dict[str, list[dict[str, object]]] = defaultdict(list)

    def take(record: Record) -> None:
        if record.key == event_id.encode():
            found[record.topic].append(json.loads(record.value or b""))

    common = CommonSettings(kafka_bootstrap_servers=stack.bootstrap)
    read_to_end(common, KafkaClientSettings(), [QUEUE_JOINED, QUEUE_READY], take)
    return found


@pytest.mark.timeout(180)
def test_a_lost_second_is_rebuilt_from_kafka(durable_stack: Stack, event_id: str) -> None:
    stack = durable_stack
    admitter = stack.start("admitter")
    stack.start("consumer")
    run(stack.redis.url, lambda s: create_event(s, event_id, max_concurrent=SLOTS, rate=1000.0))
    first = _join(stack, event_id, range(20))
    wait_until(lambda: len(_ready(stack, event_id, first)) == SLOTS, "a full checkout")
    wait_until(lambda: outbox_empty(stack.redis.url, event_id), "phase A relayed")
    wait_until(lambda: verified(stack.redis.url, event_id), "the event checked by the admitter")
    time.sleep(1.5)  # everysec: the AOF up to here is on disk
    keep = stack.redis.aof().stat().st_size

    # Phase B: outcomes, a leave, more joins and admissions, all relayed to Kafka.
    admitted = _ready(stack, event_id, first)
    complete(stack, event_id, admitted[:2])
    queued = [sid for sid in first if sid not in admitted]
    run(stack.redis.url, lambda s: s.leave(event_id, queued[-1]))
    second = _join(stack, event_id, range(20, 30))
    everyone = first + second
    wait_until(
        lambda: len(set(_ready(stack, event_id, everyone)) - set(admitted)) == 2,
        "two more admitted after the outcomes",
    )
    wait_until(lambda: outbox_empty(stack.redis.url, event_id), "phase B relayed")
    truth = snapshot(stack.redis.url, event_id, everyone)

    # Phase C: joins acknowledged while the relay is frozen: they never reach Kafka.
    admitter.proc.send_signal(signal.SIGSTOP)
    lost = _join(stack, event_id, range(30, 35))
    stack.redis.crash(keep_aof_bytes=keep)
    stack.redis.start()

    # Redis went back in time: until it is checked, nothing is read from it (a READY user
    # could read QUEUED) and no ticket can be taken.
    with pytest.raises(WaitroomError) as unread:
        snapshot(stack.redis.url, event_id, everyone)
    assert unread.value.code is Code.RECOVERING
    with pytest.raises(WaitroomError) as refused:
        _join(stack, event_id, range(90, 91))
    assert refused.value.code is Code.RECOVERING  # no ticket can be taken before the check

    admitter.kill()
    fresh = stack.start("admitter")
    wait_until(lambda: verified(stack.redis.url, event_id), "the event rebuilt", timeout=60)

    assert snapshot(stack.redis.url, event_id, everyone) == truth  # outcomes re-applied too
    gone = snapshot(stack.redis.url, event_id, lost)
    assert [seen.status for seen in gone.values()] == [None] * len(lost)
    on_kafka = _kafka(stack, event_id)
    joined = {m["session_id"] for m in on_kafka[QUEUE_JOINED]}
    assert joined == set(everyone)  # what was lost is exactly what never reached Kafka
    admissions: dict[object, set[object]] = defaultdict(set)
    for message in on_kafka[QUEUE_READY]:
        admissions[message["session_id"]].add(message["admitted_at"])
    assert all(len(times) == 1 for times in admissions.values())  # nobody admitted twice

    newcomers = _join(stack, event_id, range(40, 43))
    assert min(tickets(newcomers)) > max(tickets(everyone + lost))  # no ticket given twice
    assert "Redis is behind Kafka for event" in fresh.log()
