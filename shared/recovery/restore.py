"""Rebuilding events in Redis from what Kafka holds.

One recovery of one event, each step one atomic script:

1. ``restore_begin``: mark the event recovering (joins answer WTR011 and admission waits) and
   move the ticket counter past every ticket that may exist: the highest on Kafka or issued by
   the last watermark, plus, when Redis lost something, a margin for joins acknowledged but
   never relayed (nobody knows their tickets, so none of them is handed out again). An empty
   Redis gets the event's config back from the watermark first.
2. ``restore_sessions``, in batches: every session, moved forward only (``restore_sessions.lua``).
3. ``restore_holes``: tickets from the head up that nobody waits under become holes (those who
   left while waiting, the lost joins, the margin), so positions count only people.
4. ``restore_done``: the head past every admitted ticket, the run id stamped, the event open.

Running it again gives the same state; joins that arrive meanwhile are refused, and leaves or
outcomes that arrive meanwhile win, because a session never moves back.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from shared import keys
from shared.errors import Refused
from shared.kafka import KafkaThread
from shared.recovery.history import EventHistory, HistoryReader
from shared.recovery.plan import plan_event
from shared.recovery.reader import read_to_end
from shared.recovery.watermark import Watermark, event_config, regression
from shared.scripts import Scripts
from shared.settings import CommonSettings, ConsumerSettings, KafkaClientSettings

#: Sessions per ``restore_sessions`` call and tickets per ``restore_holes`` call: each call
#: holds Redis for a few milliseconds at most.
SESSION_BATCH = 500
HOLE_BATCH = 5000

#: Why a restore ran when Redis did not look behind Kafka (``waitroom recover --force``).
FORCED = "an operator forced a restore (waitroom recover --force)"

#: Config field listing the ticket ranges recoveries skipped ("a-b,c-d"): the joins lost before
#: Kafka and the margin. No session will ever hold one, and the counter (so every later
#: watermark's ``issued``) is past them; a later recovery, say from an empty Redis, must not
#: count them as joins lost again. It travels in the watermark's config with the rest.
SKIPPED = "skipped"


def skipped_ranges(*configs: dict[str, str]) -> list[tuple[int, int]]:
    """The skipped ranges the configs record (junk is ignored: it only costs a recount)."""
    ranges = []
    for config in configs:
        for part in config.get(SKIPPED, "").split(","):
            low, _, high = part.partition("-")
            if low.isdigit() and high.isdigit():
                ranges.append((int(low), int(high)))
    return ranges


@dataclass
class EventReport:
    """What recovering one event found and did (``waitroom recover --json`` prints these)."""

    event_id: str
    action: str = "verified"  # verified (nothing lost), restored, or skipped (nothing known)
    reason: str = ""
    config_rebuilt: bool = False
    sessions: dict[str, int] = field(default_factory=dict)
    written: int = 0
    advanced: int = 0
    kept: int = 0
    conflicts: int = 0
    seq_before: int = 0
    seq_after: int = 0
    head: int = 0
    holes: int = 0
    lost_joins: int = 0
    skipped_tickets: int = 0
    kafka_messages: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def recover_event(
    scripts: Scripts,
    event_id: str,
    history: EventHistory | None,
    mark: Watermark | None,
    *,
    margin: int,
    force: bool = False,
) -> EventReport:
    """Check one event against Kafka and rebuild what Redis lost (module docstring)."""
    started = time.monotonic()
    report = EventReport(event_id, kafka_messages=history.messages if history else 0)
    probe = await scripts.restore_probe(event_id)
    reason = regression(probe, mark) or probe.recovery or (FORCED if force else "")
    if not reason:
        if probe.config:
            await scripts.restore_done(event_id, 0, "")
        else:
            report.action = "skipped"
        report.seconds = time.monotonic() - started
        return report
    config = probe.config or (event_config(mark.config) if mark is not None else {})
    if "session_ttl_ms" not in config:
        raise Refused(f"event {event_id!r}: Redis and Kafka hold no configuration to rebuild")
    history = history or EventHistory(event_id)
    plan = plan_event(history, int(config["session_ttl_ms"]))
    issued = max(mark.issued if mark is not None else 0, plan.max_ticket)
    lost = reason != FORCED
    created, before, after = await scripts.restore_begin(
        event_id,
        reason,
        issued + (margin if lost else 0),
        {} if probe.config else config,
    )
    report.action, report.reason, report.config_rebuilt = "restored", reason, created
    report.sessions, report.seq_before, report.seq_after = plan.statuses, before, after
    for i in range(0, len(plan.rows), SESSION_BATCH):
        counts = await scripts.restore_sessions(event_id, plan.rows[i : i + SESSION_BATCH])
        report.written += counts[0]
        report.advanced += counts[1]
        report.kept += counts[2]
        report.conflicts += counts[3]
    # Tickets up to `known` were surely handed out: one with no session anywhere is a join
    # acknowledged but never relayed, lost, unless an earlier recovery skipped it (and counted
    # it). Past `known` lie only the margin's tickets.
    known = max(issued, before)
    earlier = skipped_ranges(probe.config, mark.config if mark is not None else {})
    candidates = plan.hole_candidates(after)
    for tickets, counted in (
        ([t for t in candidates if t <= known and not _within(t, earlier)], True),
        ([t for t in candidates if t > known or _within(t, earlier)], False),
    ):
        for i in range(0, len(tickets), HOLE_BATCH):
            holes, missing = await scripts.restore_holes(event_id, tickets[i : i + HOLE_BATCH])
            report.holes += holes
            report.lost_joins += missing if counted else 0
    # Above both Redis's counter and every ticket on Kafka nobody holds a session, nor ever will:
    # joins wait for restore_done.
    dead = max(before, plan.max_ticket) + 1
    done = await scripts.restore_done(
        event_id,
        plan.min_head,
        mark.relayed_id if mark else "",
        f"{dead}-{after}" if after >= dead else "",
    )
    report.head = done[1] if done else 0
    report.skipped_tickets = max(0, after - known)
    await scripts.redis.sadd(keys.EVENTS, event_id)
    report.seconds = time.monotonic() - started
    return report


def _within(ticket: int, ranges: list[tuple[int, int]]) -> bool:
    return any(low <= ticket <= high for low, high in ranges)


def best_mark(history: EventHistory | None, mark: Watermark | None) -> Watermark | None:
    """The watermark, raised by what the history shows (a relay may not have written one)."""
    derived = history.watermark() if history is not None else None
    if derived is None or mark is None:
        return mark or derived
    return derived.advanced(mark)


@dataclass
class KafkaState:
    """What the topics hold for some events: histories and watermarks."""

    histories: dict[str, EventHistory]
    watermarks: dict[str, Watermark]
    records: int
    seconds: float


def read_kafka(
    common: CommonSettings,
    tuning: KafkaClientSettings,
    consumer: ConsumerSettings,
    events: set[str] | None,
    progress: Callable[[int, int], None] | None = None,
) -> KafkaState:
    """Read every event topic once for ``events`` (all when None). Blocking."""
    started = time.monotonic()
    reader = HistoryReader(consumer, events)
    records = read_to_end(common, tuning, reader.topics, reader.take, progress=progress)
    return KafkaState(reader.histories, reader.watermarks, records, time.monotonic() - started)


def read_watermarks(
    common: CommonSettings, tuning: KafkaClientSettings, consumer: ConsumerSettings
) -> dict[str, Watermark]:
    """Every event's latest watermark (the compacted topic alone). Blocking."""
    from shared.messages import EVENTS_TOPIC

    reader = HistoryReader(consumer, None)
    read_to_end(common, tuning, [EVENTS_TOPIC], reader.take)
    return reader.watermarks


async def recover(
    scripts: Scripts,
    common: CommonSettings,
    tuning: KafkaClientSettings,
    consumer: ConsumerSettings,
    events: list[str] | None,
    *,
    margin: int,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
    on_event: Callable[[EventReport], None] | None = None,
) -> tuple[KafkaState, list[EventReport]]:
    """Recover ``events`` (every event Redis or Kafka knows when None) from one read of Kafka.

    Raises:
        Refused: an event neither Redis nor Kafka knows.
    """
    wanted = None if events is None else set(events)
    thread = KafkaThread("recovery")  # a daemon thread: a hung broker cannot block exiting
    try:
        read = functools.partial(read_kafka, common, tuning, consumer, wanted, progress)
        state = await thread.call(read)
    finally:
        thread.close()
    known = set(state.watermarks) | {e for e, h in state.histories.items() if h.sessions}
    in_redis = {
        (m.decode() if isinstance(m, bytes) else str(m))
        for m in await scripts.redis.smembers(keys.EVENTS)
    }
    if events is None:
        chosen = sorted(known | in_redis)
    else:
        unknown = [e for e in events if e not in known and e not in in_redis]
        if unknown:
            raise Refused(f"unknown event(s): {', '.join(unknown)} (not in Redis, not on Kafka)")
        chosen = list(dict.fromkeys(events))
    reports = []
    for event_id in chosen:
        history = state.histories.get(event_id) or EventHistory(event_id)
        report = await recover_event(
            scripts,
            event_id,
            history,
            best_mark(history, state.watermarks.get(event_id)),
            margin=margin,
            force=force,
        )
        reports.append(report)
        if on_event is not None:
            on_event(report)
    return state, reports
