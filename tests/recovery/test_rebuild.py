"""A sale's state is rebuilt exactly from Kafka after Redis restarted empty.

A real sale runs against a Redis of the test's own, an admitter and a consumer: joins, leaves
from the queue and from checkout, admissions, checkout outcomes. Every session is snapshotted
as users see it (status, rank, times, token); Redis is killed and restarted without
persistence (empty, a new server), and ``waitroom recover --all`` rebuilds it.
"""

from __future__ import annotations

import json

from recovery_support import (
    SECRET,
    Stack,
    create_event,
    event_state,
    outbox_empty,
    produce,
    run,
    snapshot,
    tickets,
    verified,
    wait_until,
)

from shared.messages import checkout_message
from shared.scripts import Scripts
from shared.sessions import Status
from shared.timefmt import now_ms
from shared.token import verify

USERS = 40
SLOTS = 6


def _sale(stack: Stack, event_id: str) -> list[str]:
    """Joins, leaves, admissions and outcomes; returns every session id, in join order."""

    async def join(s: Scripts) -> list[str]:
        await create_event(s, event_id, max_concurrent=SLOTS, rate=1000.0, checkout_ttl_seconds=600)
        sids = [(await s.join(event_id, f"user-{i}")).session_id for i in range(USERS)]
        for i in (10, 17, 23):  # leave while waiting
            await s.leave(event_id, sids[i])
        return sids

    sids = run(stack.redis.url, join)

    def in_checkout() -> list[str]:
        result = run(stack.redis.url, lambda s: s.status(event_id, sids))
        return [
            v.session_id for v in result.sessions if v.record and v.record.status is Status.READY
        ]

    first = wait_until(lambda: len(in_checkout()) == SLOTS and in_checkout(), "a full checkout")
    outcomes = [("completed", first[0]), ("completed", first[1]), ("failed", first[2])]
    produce(
        stack.bootstrap,
        [
            (
                stack.topic(kind),
                event_id.encode(),
                json.dumps(
                    checkout_message(f"checkout.{kind}", sid, "u", event_id, now_ms())
                ).encode(),
            )
            for kind, sid in outcomes
        ],
    )
    run(stack.redis.url, lambda s: s.leave(event_id, first[3]))  # leaves checkout
    wait_until(
        lambda: len(set(in_checkout()) - set(first)) == 4, "four more admitted after the outcomes"
    )
    wait_until(lambda: outbox_empty(stack.redis.url, event_id), "everything relayed")
    return sids


def test_an_empty_redis_is_rebuilt_exactly_from_kafka(volatile_stack: Stack, event_id: str) -> None:
    stack = volatile_stack
    admitter = stack.start("admitter")
    consumer = stack.start("consumer")
    sids = _sale(stack, event_id)
    before = snapshot(stack.redis.url, event_id, sids)
    statuses = {seen.status for seen in before.values()}
    assert {
        Status.QUEUED,
        Status.READY,
        Status.COMPLETED,
        Status.FAILED,
        Status.CANCELLED,
    } <= statuses

    stack.redis.crash()
    stack.redis.start()  # empty: no persistence, and a new server
    assert all(s.status is None for s in snapshot(stack.redis.url, event_id, sids).values())

    report = stack.recover_json("--all")
    (event,) = [e for e in report["events"] if e["event_id"] == event_id]
    assert event["action"] == "restored" and event["config_rebuilt"]
    assert event["conflicts"] == 0 and event["lost_joins"] == 0
    assert sum(event["sessions"].values()) == USERS

    after = snapshot(stack.redis.url, event_id, sids)
    assert after == before  # status, queue rank, times and token of every session
    assert verified(stack.redis.url, event_id)

    async def checks(s: Scripts) -> tuple[list[str], int]:
        ready = [sid for sid, seen in before.items() if seen.status is Status.READY]
        verdicts = [(await verify(s, SECRET, before[sid].token)).reason for sid in ready]
        newcomer = await s.join(event_id, "user-late")
        return verdicts, newcomer.position

    verdicts, position = run(stack.redis.url, checks)
    assert verdicts == ["valid"] * SLOTS  # `waitroom token verify` accepts the very same tokens
    waiting = sum(1 for seen in before.values() if seen.status is Status.QUEUED)
    assert position == waiting + 1  # behind everyone who waited before the loss

    state = event_state(stack.redis.url, event_id)
    assert int(state["seq"]) >= max(tickets(sids)) + 100  # past every ticket, and the margin
    assert len(state["checkout"]) == SLOTS  # every lease back, scored by its deadline
    assert admitter.proc.poll() is None and consumer.proc.poll() is None


def test_recovering_twice_changes_nothing(volatile_stack: Stack, event_id: str) -> None:
    stack = volatile_stack
    stack.start("admitter")
    stack.start("consumer")
    _sale(stack, event_id)
    stack.redis.crash()
    stack.redis.start()
    assert stack.recover_json(event_id)["events"][0]["action"] == "restored"
    once = event_state(stack.redis.url, event_id)
    again = stack.recover_json(event_id)["events"][0]
    assert again["action"] == "verified"
    forced = stack.recover_json(event_id, "--force")["events"][0]
    assert forced["action"] == "restored" and forced["written"] == forced["advanced"] == 0
    assert event_state(stack.redis.url, event_id) == once
