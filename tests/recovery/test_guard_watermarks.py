"""The guard compares a restarted Redis with the newest watermark on Kafka, not the one it last
saw itself.

Found by the long chaos run (docs/reliability.md, "Chaos runs"): admitters take turns owning an
event, so the watermarks the owner writes are newer than the ones the other replicas read when
they started. After the AOF was cut back, the replica that checked the event compared Redis
with its own stale watermark, found nothing behind, stamped the event, and admitted again the
100 users whose admissions Redis had lost (each got a second token while the first, already on
Kafka, stayed valid: 68 admissions above the cap).
"""

from __future__ import annotations

import asyncio
import warnings

from support import with_scripts

from shared import keys, messages
from shared.events import EventConfig, EventStore
from shared.kafka import kafka_producer, send_and_wait
from shared.recovery.watermark import Watermark, event_config
from shared.scripts import Scripts
from shared.settings import AdmitterSettings, CommonSettings, ConsumerSettings, KafkaClientSettings
from waitroom_admitter.guard import RecoveryGuard

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka  # noqa: F401


def _write(common: CommonSettings, mark: Watermark) -> None:
    """What another admitter's relay writes with a batch."""
    producer = kafka_producer(common, KafkaClientSettings(), client_id="test-relay")
    try:
        record = (messages.EVENTS_TOPIC, mark.event_id.encode(), mark.encode(), [])
        send_and_wait(producer, [record], 30)
    finally:
        producer.close()


async def _settle(guard: RecoveryGuard) -> None:
    """Wait for the checks the guard started (each is bounded by Kafka's timeouts)."""
    while guard._tasks:
        await asyncio.gather(*guard._tasks.values(), return_exceptions=True)


def test_a_restarted_redis_is_checked_against_the_newest_watermark(
    redis_url: str, bootstrap: str, event_id: str
) -> None:
    common = CommonSettings(kafka_bootstrap_servers=bootstrap)

    async def body(s: Scripts) -> set[str]:
        await EventStore(s.redis, s).create(EventConfig(event_id, max_concurrent=5, rate=1000.0))
        for i in range(3):
            await s.join(event_id, f"user-{i}")
        config = event_config((await s.restore_probe(event_id)).config)
        # What this replica read when it started: the event as an earlier server relayed it.
        old = Watermark(event_id, generation="server-1", issued=3, max_ticket=3, config=config)
        await asyncio.to_thread(_write, common, old)
        guard = RecoveryGuard(
            s,
            common,
            KafkaClientSettings(),
            AdmitterSettings(recovery_auto=False),
            ConsumerSettings(),
            on_verified=lambda _: None,
        )
        await s.restore_done(event_id, 0, "")
        await guard.check([event_id])
        await _settle(guard)
        assert guard.loaded and event_id in guard.verified
        # Another replica owned the event on server 2, admitted all three and relayed it.
        newer = Watermark(
            event_id, generation="server-2", issued=3, max_ticket=3, max_admitted=3, config=config
        )
        await asyncio.to_thread(_write, common, newer)
        # Server 2 went down losing its last second (no admission survived); Redis is another
        # server now, and the event was last checked on server 2.
        await s.redis.hset(keys.config(event_id), "generation", "server-2")
        guard.verified[event_id] = "server-2"  # as if this replica verified it there
        guard.servers = {"server-2"}  # and the server it sees now is one it never saw
        try:
            await guard.check([event_id])
            await _settle(guard)
            return guard.behind
        finally:
            await guard.close()

    # Other tests' events on the shared broker may be reported too (this Redis lacks them).
    assert event_id in with_scripts(redis_url, body)
