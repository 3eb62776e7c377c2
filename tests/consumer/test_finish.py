"""The finish pipeline on a real Redis: one message that cannot be sent costs only itself."""

from __future__ import annotations

import asyncio
from collections import Counter

from consumer_support import admitted_sessions, records, run

from shared.ids import event_suffix
from shared.scripts import Scripts
from shared.sessions import Status
from shared.settings import CommonSettings, ConsumerSettings, KafkaClientSettings
from waitroom_consumer.broker import Broker, Message
from waitroom_consumer.handler import Finish, Handler, outcomes
from waitroom_consumer.retry import Retrier

SETTINGS = ConsumerSettings()
COMPLETED = outcomes(SETTINGS)[SETTINGS.topic_completed]


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
