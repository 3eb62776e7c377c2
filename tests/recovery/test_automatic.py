"""What the admitter does by itself, by setting: rebuild events Redis lost entirely
(``WAITROOM_RECOVERY_REBUILD_MISSING``), or keep an event paused for the operator
(``WAITROOM_RECOVERY_AUTO=0``)."""

from __future__ import annotations

import time

import pytest
from recovery_support import (
    Stack,
    create_event,
    outbox_empty,
    run,
    snapshot,
    verified,
    wait_until,
)

from shared.errors import Code, WaitroomError
from shared.scripts import Scripts


def _sale(stack: Stack, event_id: str, users: int = 8) -> list[str]:
    async def body(s: Scripts) -> list[str]:
        await create_event(s, event_id, max_concurrent=3, rate=1000.0)
        return [(await s.join(event_id, f"user-{i}")).session_id for i in range(users)]

    sids = run(stack.redis.url, body)
    wait_until(lambda: verified(stack.redis.url, event_id), "the event checked")
    wait_until(lambda: outbox_empty(stack.redis.url, event_id), "the sale relayed")
    return sids


def test_the_admitter_rebuilds_a_lost_event_when_told_to(
    volatile_stack: Stack, event_id: str
) -> None:
    stack = volatile_stack
    admitter = stack.start("admitter", WAITROOM_RECOVERY_REBUILD_MISSING="1")
    sids = _sale(stack, event_id)
    wait_until(
        lambda: sum(1 for s in snapshot(stack.redis.url, event_id, sids).values() if s.token) == 3,
        "three admitted",
    )
    before = snapshot(stack.redis.url, event_id, sids)
    stack.redis.crash()
    stack.redis.start()  # empty
    wait_until(lambda: verified(stack.redis.url, event_id), "the event rebuilt by the admitter")
    assert snapshot(stack.redis.url, event_id, sids) == before
    assert "Redis has no state for the event" in admitter.log()


@pytest.mark.timeout(120)
def test_without_automatic_recovery_the_event_waits_for_the_operator(
    durable_stack: Stack, event_id: str
) -> None:
    stack = durable_stack
    admitter = stack.start("admitter", WAITROOM_RECOVERY_AUTO="0")
    sids = _sale(stack, event_id, users=4)
    time.sleep(1.5)  # everysec: on disk up to here
    keep = stack.redis.aof().stat().st_size
    more = run(stack.redis.url, lambda s: s.join(event_id, "user-late")).session_id
    wait_until(lambda: outbox_empty(stack.redis.url, event_id), "the late join relayed")
    stack.redis.crash(keep_aof_bytes=keep)
    stack.redis.start()
    wait_until(lambda: "Redis is behind Kafka" in admitter.log(), "the admitter's report")
    time.sleep(1.0)  # several sweeps: it must not rebuild by itself
    assert not verified(stack.redis.url, event_id)
    with pytest.raises(WaitroomError) as refused:
        run(stack.redis.url, lambda s: s.join(event_id, "user-during"))
    assert refused.value.code is Code.RECOVERING
    assert "run `waitroom recover`" in admitter.log()

    (event,) = stack.recover_json(event_id)["events"]
    assert event["action"] == "restored"
    assert snapshot(stack.redis.url, event_id, [more])[more].status is not None
    assert verified(stack.redis.url, event_id)
    run(stack.redis.url, lambda s: s.join(event_id, "user-after"))
    assert len(sids) == 4
