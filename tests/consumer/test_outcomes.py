"""Checkout outcomes from Kafka free slots, set statuses and revoke tokens; idempotently."""

from __future__ import annotations

from collections.abc import Callable

import redis
from consumer_support import (
    ConsumerProcess,
    Topics,
    admitted_sessions,
    in_checkout,
    outcome,
    produce,
    read_topic,
    records,
    run,
    wait_until,
)

from shared import keys
from shared.scripts import Scripts
from shared.sessions import Status
from shared.token import mint_for, verify

Start = Callable[[dict[str, str]], ConsumerProcess]
SECRET = "consumer-test-secret-0123456789abcdef"
KINDS = ("checkout.completed", "checkout.failed", "checkout.expired")


def test_each_outcome_frees_the_slot_sets_the_status_and_the_next_user_is_admitted(
    redis_url: str,
    sync_redis: redis.Redis,
    bootstrap: str,
    event_id: str,
    topics: Topics,
    consumer_env: dict[str, str],
    consumers: Start,
) -> None:
    admitted, waiting = admitted_sessions(redis_url, event_id, admitted=3, waiting=3)
    found = records(redis_url, event_id, admitted)

    async def tokens(s: Scripts) -> list[str]:
        return [
            mint_for(SECRET, sid, event_id, r) for sid, r in zip(admitted, found, strict=True) if r
        ]

    minted = run(redis_url, tokens)
    pubsub = sync_redis.pubsub()
    pubsub.subscribe(keys.NOTIFY_CHANNEL)
    produce(
        bootstrap,
        [
            (topics.topic(kind), event_id.encode(), outcome(kind, sid, event_id))
            for kind, sid in zip(KINDS, admitted, strict=True)
        ],
    )
    consumers(consumer_env)

    def finished() -> bool:
        return all(r and r.status.terminal for r in records(redis_url, event_id, admitted))

    wait_until(finished, what="the three outcomes to be handled")
    final = records(redis_url, event_id, admitted)
    assert [(r.status, r.reason) for r in final if r] == [
        (Status.COMPLETED, "completed"),
        (Status.FAILED, "failed"),
        (Status.EXPIRED, "expired"),
    ]
    assert in_checkout(redis_url, event_id) == 0

    async def check_tokens(s: Scripts) -> list[str]:
        return [(await verify(s, SECRET, t)).reason for t in minted]

    assert all(reason.startswith("revoked") for reason in run(redis_url, check_tokens))

    # The admitter is woken for this event (it refills the slot at once) ...
    def woken() -> bool:
        while (message := pubsub.get_message(timeout=0.1)) is not None:
            if message["type"] == "message" and message["data"] == event_id.encode():
                return True
        return False

    wait_until(woken, timeout=10, what="a wake-up on the notify channel")
    pubsub.close()

    # ... and the freed slots go to the users who were waiting.
    async def admit(s: Scripts) -> int:
        result = await s.admit(event_id, 10)
        assert result is not None
        return result.admitted

    assert run(redis_url, admit) == 3
    assert [r.status for r in records(redis_url, event_id, waiting) if r] == [Status.READY] * 3


def test_every_message_delivered_twice_leaves_the_same_state_as_once(
    redis_url: str,
    sync_redis: redis.Redis,
    bootstrap: str,
    event_id: str,
    topics: Topics,
    consumer_env: dict[str, str],
    consumers: Start,
) -> None:
    admitted, _ = admitted_sessions(redis_url, event_id, admitted=31)
    sids, sentinel = admitted[:30], admitted[30]
    messages = [
        (topics.topic(KINDS[i % 3]), event_id.encode(), outcome(KINDS[i % 3], sid, event_id))
        for i, sid in enumerate(sids)
    ]
    produce(bootstrap, messages)
    consumers(consumer_env)
    wait_until(lambda: in_checkout(redis_url, event_id) == 1, what="the first deliveries")

    sentinel_names = {sentinel.encode(), sentinel.split(".")[1].encode()}  # its id and ticket

    def snapshot() -> dict[bytes, dict[bytes, bytes]]:
        """Every hash and sorted set of the event, without the sentinel's entries."""
        state: dict[bytes, dict[bytes, bytes]] = {}
        for key in sync_redis.scan_iter(match=f"*{{{event_id}}}*"):
            kind = sync_redis.type(key)
            if kind == b"hash":
                entries = sync_redis.hgetall(key)
            elif kind == b"zset":
                entries = {
                    m: str(s).encode() for m, s in sync_redis.zrange(key, 0, -1, withscores=True)
                }
            else:
                continue
            kept = {
                k: v
                for k, v in entries.items()
                if k not in sentinel_names and v not in sentinel_names
            }
            if kept:  # a key that held only the sentinel is gone once it finishes
                state[key] = kept
        return state

    once = snapshot()
    # Every message again (in another order), then the sentinel to know they were all read.
    sentinel_message = (topics.completed, event_id.encode(), outcome(KINDS[0], sentinel, event_id))
    produce(bootstrap, [*messages[::-1], sentinel_message])
    wait_until(lambda: in_checkout(redis_url, event_id) == 0, what="the second deliveries")
    assert snapshot() == once
    final = records(redis_url, event_id, sids)
    assert [r.status for r in final if r] == [
        (Status.COMPLETED, Status.FAILED, Status.EXPIRED)[i % 3] for i in range(30)
    ]


def test_outcomes_for_sessions_not_in_checkout_change_nothing_and_are_not_dead_letters(
    redis_url: str,
    bootstrap: str,
    event_id: str,
    topics: Topics,
    consumer_env: dict[str, str],
    consumers: Start,
) -> None:
    admitted, waiting = admitted_sessions(redis_url, event_id, admitted=2, waiting=1)
    left, sentinel = admitted

    async def leave(s: Scripts) -> None:
        await s.leave(event_id, left)

    run(redis_url, leave)
    queued = waiting[0]
    foreign = f"{'A' * 22}.7.{'bm8tc3VjaC1ldmVudA'}"  # well formed, for an event we never had
    key = event_id.encode()
    produce(
        bootstrap,
        [
            (topics.completed, key, outcome(KINDS[0], left, event_id)),
            (topics.completed, key, outcome(KINDS[0], queued, event_id)),
            (topics.completed, key, outcome(KINDS[0], "not-a-session-id", event_id)),
            (topics.completed, key, outcome(KINDS[0], foreign, event_id)),
            (topics.completed, key, outcome(KINDS[0], sentinel, event_id)),
        ],
    )
    consumers(consumer_env)
    wait_until(lambda: in_checkout(redis_url, event_id) == 0, what="the sentinel")
    left_record, queued_record = records(redis_url, event_id, [left, queued])
    assert left_record is not None and left_record.status is Status.CANCELLED
    assert queued_record is not None and queued_record.status is Status.QUEUED
    # Same partition, so the dead-letter topic would have them by now: it stays empty.
    assert read_topic(bootstrap, topics.dlq, expected=1, timeout=2) == []
