"""A recovery counts each lost join once: not the margin another recovery skipped.

Found by the long chaos run (docs/reliability.md, "Chaos runs"): after the AOF was cut back,
two admitters both owned the event for a moment and rebuilt it at the same time. The second
read the ticket counter the first had already moved past its margin, took every skipped ticket
for a join acknowledged but never relayed, and logged "10000 joins were lost before reaching
Kafka" (and counted them in ``waitroom_recovery_lost_joins_total``) when none was.
"""

from __future__ import annotations

import json

from support import with_scripts

from shared import keys
from shared.events import EventConfig, EventStore
from shared.ids import event_suffix
from shared.recovery.history import EventHistory, SessionFacts
from shared.recovery.restore import recover_event
from shared.recovery.watermark import Watermark, event_config
from shared.scripts import Scripts
from shared.sessions import SessionRecord, Status

MARGIN = 100
T0 = 1_800_000_000_000


async def _lost_two_seconds(s: Scripts, event_id: str) -> tuple[EventHistory, Watermark]:
    """Redis holds joins 1-5; Kafka also holds 6 and 7, and its watermark saw the counter at 9:
    the joins of tickets 8 and 9 were acknowledged and never relayed (lost)."""
    await EventStore(s.redis, s).create(EventConfig(event_id, rate=1.0))
    sids = [(await s.join(event_id, f"user-{i}")).session_id for i in range(1, 6)]
    sids += [f"{'m' * 21}{t}.{t}.{event_suffix(event_id)}" for t in (6, 7)]
    history = EventHistory(event_id)
    for ticket, sid in enumerate(sids, start=1):
        history.sessions[ticket] = SessionFacts(
            sid, ticket, sid.split(".")[0], user_id=f"user-{ticket}", joined_ms=T0 + ticket
        )
    probe = await s.restore_probe(event_id)
    mark = Watermark(
        event_id, generation="a-lost-server", issued=9, max_ticket=7, config=probe.config
    )
    return history, mark


def test_a_recovery_beside_one_under_way_counts_only_the_lost_joins(
    redis_url: str, event_id: str
) -> None:
    async def body(s: Scripts) -> tuple[int, int, int]:
        history, mark = await _lost_two_seconds(s, event_id)
        # Another admitter began the same recovery: the counter is already past its margin.
        await s.restore_begin(event_id, "another admitter", 9 + MARGIN, {})
        report = await recover_event(s, event_id, history, mark, margin=MARGIN)
        return report.seq_before, report.lost_joins, report.skipped_tickets

    seq_before, lost, skipped = with_scripts(redis_url, body)
    assert lost == 2
    assert skipped == MARGIN
    assert seq_before == 5


def test_a_second_recovery_counts_no_join_the_first_counted(redis_url: str, event_id: str) -> None:
    async def body(s: Scripts) -> tuple[int, int, int]:
        history, mark = await _lost_two_seconds(s, event_id)
        first = await recover_event(s, event_id, history, mark, margin=MARGIN)
        again = await recover_event(s, event_id, history, mark, margin=MARGIN, force=True)
        return first.lost_joins, again.lost_joins, again.holes

    first, again, holes = with_scripts(redis_url, body)
    assert first == 2
    assert again == 0
    assert holes == 0


def test_a_later_recovery_from_empty_does_not_count_an_earlier_margin(
    redis_url: str, event_id: str
) -> None:
    """The first recovery skipped 100 tickets; the watermark then carries a counter past them.
    When Redis later restarts empty, those tickets are no joins anybody lost."""

    async def body(s: Scripts) -> tuple[int, int, int]:
        history, mark = await _lost_two_seconds(s, event_id)
        first = await recover_event(s, event_id, history, mark, margin=MARGIN)
        probe = await s.restore_probe(event_id)
        # What the relay wrote with its next batch: the counter now, the config now.
        relayed = Watermark(
            event_id,
            generation=probe.run_id + "-before",
            issued=probe.seq,
            max_ticket=7,
            config=event_config(probe.config),
        )
        await s.redis.delete(*[k async for k in s.redis.scan_iter(keys.event_pattern(event_id))])
        again = await recover_event(s, event_id, history, relayed, margin=MARGIN)
        return first.lost_joins, again.lost_joins, again.skipped_tickets

    first, again, skipped = with_scripts(redis_url, body)
    assert first == 2
    assert again == 0  # the two lost joins were counted by the first recovery
    assert skipped == MARGIN


def test_the_first_ending_kafka_holds_beats_a_later_one_redis_made_up(
    redis_url: str, event_id: str
) -> None:
    """Found by the long chaos run: Redis lost its last second, in which a user in checkout
    completed; the restarted Redis, not yet checked, let the lease run out (EXPIRED, later).
    The restore kept Redis's ending ("as far along") and the completed purchase was gone,
    its slot held until the late expiry. The first ending wins, as the history folds it."""

    def row(status: Status, finished: int, reason: str) -> tuple[int, str]:
        rec = [int(status), "user-1", "n" * 22, T0, T0 + 10**7, T0 + 10, T0 + 2010]
        return 1, json.dumps([*rec, finished, reason])

    async def body(s: Scripts) -> tuple[tuple[int, int, int, int], SessionRecord]:
        await EventStore(s.redis, s).create(EventConfig(event_id, rate=1.0))
        await s.restore_sessions(event_id, [row(Status.EXPIRED, T0 + 5000, "checkout_expired")])
        counts = await s.restore_sessions(event_id, [row(Status.COMPLETED, T0 + 900, "completed")])
        raw = await s.redis.hget(keys.sessions(event_id), "1")
        return counts, SessionRecord.decode(raw, 1)

    counts, rec = with_scripts(redis_url, body)
    assert counts == (0, 1, 0, 0)
    assert (rec.status, rec.finished_ms, rec.reason) == (Status.COMPLETED, T0 + 900, "completed")


def test_the_skipped_ranges_are_listed_with_the_stamp_each_once(
    redis_url: str, event_id: str
) -> None:
    """restore_done lists a recovery's skipped range in the step that stamps the event: a
    repeated finish (a recovery run again after dying before its end) lists it once."""

    async def body(s: Scripts) -> bytes | None:
        await EventStore(s.redis, s).create(EventConfig(event_id, rate=1.0))
        await s.restore_done(event_id, 0, "", "10-109")
        await s.restore_done(event_id, 0, "", "10-109")
        await s.restore_done(event_id, 0, "", "")
        await s.restore_done(event_id, 0, "", "200-299")
        listed: bytes | None = await s.redis.hget(keys.config(event_id), "skipped")
        return listed

    assert with_scripts(redis_url, body) == b"10-109,200-299"
