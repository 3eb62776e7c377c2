"""Redis losing checkout outcomes whose offsets the consumer had committed.

Outcomes write nothing Kafka's watermarks count, so the recovery guard finds such a server
"holding all of it"; only Kafka's checkout topics still have the outcomes. The test fills
checkout, stops the admitter (nothing else changes), has the consumer apply the outcomes, then
kills Redis and cuts its AOF back to before them, as an OS crash with ``appendfsync everysec``
leaves it. The consumer must notice the new server and apply the outcomes again. With the
replay off (``WAITROOM_CONSUMER_REPLAY_SECONDS=0``) the same run shows what was lost: the users
stay READY in Redis and their slots stay taken until the checkout lease runs out.
"""

from __future__ import annotations

import signal
import time

import pytest
from recovery_support import (
    Stack,
    complete,
    create_event,
    outbox_empty,
    run,
    snapshot,
    verified,
    wait_until,
)

from shared.errors import WaitroomError
from shared.scripts import Scripts
from shared.sessions import Status

SLOTS = 4


def _statuses(stack: Stack, event_id: str, sids: list[str]) -> set[Status | None]:
    """The sessions' statuses; none while the event waits for the guard's check (WTR011)."""
    try:
        seen = snapshot(stack.redis.url, event_id, sids)
    except WaitroomError:
        return set()
    return {s.status for s in seen.values()}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("replay_seconds", [60, 0])
def test_outcomes_redis_lost_are_applied_again_from_kafka(
    durable_stack: Stack, event_id: str, replay_seconds: int
) -> None:
    stack = durable_stack
    admitter = stack.start("admitter")
    consumer = stack.start("consumer", WAITROOM_CONSUMER_REPLAY_SECONDS=str(replay_seconds))
    run(stack.redis.url, lambda s: create_event(s, event_id, max_concurrent=SLOTS, rate=1000.0))

    async def join(s: Scripts) -> list[str]:
        return [(await s.join(event_id, f"user-{i}")).session_id for i in range(3 * SLOTS)]

    everyone = run(stack.redis.url, join)
    first = everyone[:SLOTS]
    wait_until(
        lambda: _statuses(stack, event_id, first) == {Status.READY},
        "the first users in checkout",
    )
    wait_until(lambda: outbox_empty(stack.redis.url, event_id), "the admissions relayed")
    wait_until(lambda: verified(stack.redis.url, event_id), "the event checked by the admitter")
    admitter.proc.send_signal(signal.SIGSTOP)  # from here on only the consumer writes
    time.sleep(1.5)  # everysec: the AOF up to here is on disk
    keep = stack.redis.aof().stat().st_size

    complete(stack, event_id, first)
    wait_until(
        lambda: _statuses(stack, event_id, first) == {Status.COMPLETED},
        "the outcomes applied",
    )
    # The heartbeat's look at the server has run at least once with this server.
    time.sleep(6)
    stack.redis.crash(keep_aof_bytes=keep)
    stack.redis.start()
    admitter.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: verified(stack.redis.url, event_id), "the restarted server checked")
    if not replay_seconds:
        time.sleep(6)  # a heartbeat's look, which would have replayed
        assert _statuses(stack, event_id, first) == {Status.READY}, "nothing was lost"
        assert "Redis is another server now" not in consumer.log()
        return
    wait_until(
        lambda: _statuses(stack, event_id, first) == {Status.COMPLETED},
        "the lost outcomes applied again",
    )
    # The slots they free go to the next users, in order.
    following = everyone[SLOTS : 2 * SLOTS]
    wait_until(
        lambda: _statuses(stack, event_id, following) == {Status.READY},
        "the next users admitted",
    )
    assert "Redis is another server now" in consumer.log()
