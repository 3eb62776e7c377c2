"""The finish pipeline on a real Redis: one message that cannot be sent or handled costs only
itself, an outage costs a wait, and an event's outcomes keep their order."""

from __future__ import annotations

import asyncio
from collections import Counter

from consumer_support import admitted_sessions, in_checkout, records, run
from redis.asyncio import Redis

from shared import keys, metrics
from shared.backoff import Outage
from shared.ids import event_suffix, ticket_of_session
from shared.scripts import Scripts
from shared.sessions import Status
from shared.settings import CommonSettings, ConsumerSettings, KafkaClientSettings
from waitroom_consumer.broker import Broker, Message
from waitroom_consumer.deadletter import DeadLetter
from waitroom_consumer.handler import Finish, Handler, Outcome, outcomes
from waitroom_consumer.retry import Retrier

SETTINGS = ConsumerSettings()
COMPLETED = outcomes(SETTINGS)[SETTINGS.topic_completed]
FAILED = outcomes(SETTINGS)[SETTINGS.topic_failed]


def test_a_finish_redis_py_cannot_encode_is_dead_lettered_and_the_rest_of_the_pipeline_applied(
    redis_url: str, event_id: str
) -> None:
    (first, last), _ = admitted_sessions(redis_url, event_id, admitted=2)
    # The decoder refuses lone surrogates; this one is built past it, as a bug of ours might,
    # to show the pipeline's last line of defence: redis-py fails the whole pipeline on it.
    unsendable = "\ud800" * 22 + ".1." + event_suffix(event_id)
    finishes = [
        Finish(Message("t", 0, offset, b"k", b"{}"), COMPLETED, event_id, sid, 1)
        for offset, sid in enumerate([first, unsendable, last])
    ]

    async def body(s: Scripts) -> tuple[list[tuple[int, str]], Counter[tuple[str, str]]]:
        broker = Broker(CommonSettings(), KafkaClientSettings(), SETTINGS)  # never connected
        handler = Handler(s, broker, SETTINGS, Retrier(asyncio.Event()))
        results: Counter[tuple[str, str]] = Counter()
        refused = await handler._finish(finishes, results)
        return [(d.message.offset, d.reason) for d in refused], results

    refused, results = run(redis_url, body)
    ((offset, reason),) = refused
    assert offset == 1 and reason.startswith("cannot be handled: UnicodeEncodeError")
    assert results == Counter({("completed", "done"): 2})
    final = records(redis_url, event_id, [first, last])
    assert [r.status for r in final if r] == [Status.COMPLETED, Status.COMPLETED]


async def _corrupt(s: Scripts, event_id: str, sid: str) -> None:
    """Make ``finish`` raise on this session: its record is no longer JSON."""
    await s.redis.hset(keys.sessions(event_id), str(ticket_of_session(sid)), "not json")


def _finishes(items: list[tuple[str, str, Outcome]]) -> list[Finish]:
    return [
        Finish(Message("t", 0, offset, b"k", b"{}"), outcome, event_id, sid, 1)
        for offset, (event_id, sid, outcome) in enumerate(items)
    ]


def test_a_script_error_on_one_outcome_dead_letters_it_alone_and_the_rest_keep_their_order(
    redis_url: str, event_id: str
) -> None:
    (a, b, c), _ = admitted_sessions(redis_url, event_id, admitted=3)
    other = f"{event_id}-other"
    (d,), _ = admitted_sessions(redis_url, other, admitted=1)
    # c is reported twice: failed, then completed. It must end FAILED: the first outcome wins,
    # and both come after the broken one in the batch, so they must not overtake it.
    finishes = _finishes(
        [
            (event_id, a, COMPLETED),
            (event_id, b, COMPLETED),
            (other, d, COMPLETED),
            (event_id, c, FAILED),
            (event_id, c, COMPLETED),
        ]
    )

    async def body(s: Scripts) -> tuple[list[tuple[int, str]], Counter[tuple[str, str]], int]:
        await _corrupt(s, event_id, b)
        broker = Broker(CommonSettings(), KafkaClientSettings(), SETTINGS)  # never connected
        handler = Handler(s, broker, SETTINGS, Retrier(asyncio.Event()))
        results: Counter[tuple[str, str]] = Counter()
        before = metrics.INTERNAL_ERRORS.labels("consumer")._value.get()
        refused = await handler._finish(finishes, results)
        bugs = metrics.INTERNAL_ERRORS.labels("consumer")._value.get() - before
        return [(d.message.offset, d.reason) for d in refused], results, int(bugs)

    refused, results, bugs = run(redis_url, body)
    ((offset, reason),) = refused
    assert offset == 1 and reason.startswith("redis refused it: ") and "invalid token" in reason
    assert bugs == 1
    assert results == Counter(
        {("completed", "done"): 2, ("failed", "done"): 1, ("completed", "already"): 1}
    )
    final = records(redis_url, event_id, [a, c]) + records(redis_url, other, [d])
    assert [r.status for r in final if r] == [Status.COMPLETED, Status.FAILED, Status.COMPLETED]
    assert in_checkout(redis_url, event_id) == 1  # b's lease: its record cannot be read
    assert in_checkout(redis_url, other) == 0


class FailingOver(Retrier):
    """Records each outage wait; the first ends the outage: the read-only replica is promoted."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(asyncio.Event())
        self.client = redis
        self.waits: list[str] = []

    async def wait(self, outage: Outage, exc: BaseException) -> None:
        self.waits.append(str(exc))
        await self.client.replicaof("NO", "ONE")


def test_an_outage_met_inside_the_script_is_waited_out_and_the_batch_applied_in_order(
    redis_url: str, event_id: str
) -> None:
    sessions, _ = admitted_sessions(redis_url, event_id, admitted=4)
    finishes = _finishes([(event_id, sid, COMPLETED) for sid in sessions])

    async def body(s: Scripts) -> tuple[list[DeadLetter], Counter[tuple[str, str]], list[str]]:
        retrier = FailingOver(s.redis)
        broker = Broker(CommonSettings(), KafkaClientSettings(), SETTINGS)  # never connected
        handler = Handler(s, broker, SETTINGS, retrier)
        results: Counter[tuple[str, str]] = Counter()
        # A master demoted mid-failover: reads work, the script's first write answers READONLY
        # (caught inside the script, so it is that outcome's reply; the rest are not run).
        await s.redis.replicaof("127.0.0.1", "1")
        try:
            refused = await handler._finish(finishes, results)
        finally:
            await s.redis.replicaof("NO", "ONE")
        return refused, results, retrier.waits

    refused, results, waits = run(redis_url, body)
    assert refused == []
    assert len(waits) == 1 and waits[0].startswith("READONLY")
    assert results == Counter({("completed", "done"): 4})
    final = records(redis_url, event_id, sessions)
    assert [r.status for r in final if r] == [Status.COMPLETED] * 4
    assert in_checkout(redis_url, event_id) == 0
