"""What an event's history means in Redis: each session's record, the queue head, which tickets
still wait. Pure, so it is tested (and fuzzed) without servers; ``restore`` writes it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from shared.recovery.history import EventHistory, SessionFacts
from shared.sessions import Status


def session_record(facts: SessionFacts, session_ttl_ms: int) -> list[Any]:
    """The session's record as the scripts write it (``event_lib.lua``'s layout).

    A queued session expires ``session_ttl_ms`` after joining, as ``join.lua`` set it; an
    admitted one keeps the admission and deadline Kafka holds, so the token minted from the
    record is byte for byte the one ``queue.ready`` carried. A checkout outcome counts only for
    an admitted session (``finish.lua`` leaves a queued one alone); the earliest ending wins.
    """
    queued = facts.joined_ms
    if queued is None:  # its join never reached Kafka: the earliest time known of it
        left_ms = facts.left.at_ms if facts.left is not None else None
        queued = min((t for t in (facts.admitted_ms, left_ms) if t is not None), default=0)
    expires = queued + session_ttl_ms
    admitted = facts.admitted_ms
    endings = [facts.left] if admitted is None else [facts.left, facts.outcome]
    ending = min((e for e in endings if e is not None), key=lambda e: e.at_ms, default=None)
    if ending is not None:
        return [
            int(ending.status),
            facts.user_id,
            facts.nonce,
            queued,
            expires,
            admitted or 0,
            facts.deadline_ms or 0,
            ending.at_ms,
            ending.reason,
        ]
    if admitted is not None:
        deadline = facts.deadline_ms if facts.deadline_ms is not None else admitted
        return [int(Status.READY), facts.user_id, facts.nonce, queued, expires, admitted, deadline]
    return [int(Status.QUEUED), facts.user_id, facts.nonce, queued, expires]


@dataclass(frozen=True)
class Plan:
    """An event's sessions as Redis records, and the queue's shape they imply.

    ``waiting`` are the tickets still queued; ``min_head`` is one past the highest admitted
    ticket (the admitter takes tickets in order, so every ticket below it was admitted, left
    or expired).
    """

    event_id: str
    rows: list[tuple[int, str]]
    waiting: frozenset[int]
    min_head: int
    max_ticket: int
    statuses: dict[str, int]

    def hole_candidates(self, seq: int) -> list[int]:
        """Tickets from the head to ``seq`` nobody waits under, as far as Kafka knows."""
        return [t for t in range(self.min_head, seq + 1) if t not in self.waiting]


def plan_event(history: EventHistory, session_ttl_ms: int) -> Plan:
    """The records and queue shape of an event's history; sessions Kafka knows no user of
    (only an outcome arrived) are left out, as ``finish`` would ignore them."""
    rows: list[tuple[int, str]] = []
    waiting: set[int] = set()
    statuses: Counter[str] = Counter()
    max_admitted = 0
    for ticket in sorted(history.sessions):
        facts = history.sessions[ticket]
        if not facts.user_id or (
            facts.joined_ms is None and facts.admitted_ms is None and facts.left is None
        ):
            continue
        record = session_record(facts, session_ttl_ms)
        status = Status(record[0])
        statuses[status.name] += 1
        if status is Status.QUEUED:
            waiting.add(ticket)
        if facts.admitted_ms is not None:
            max_admitted = max(max_admitted, ticket)
        rows.append((ticket, json.dumps(record, separators=(",", ":"), ensure_ascii=False)))
    return Plan(
        event_id=history.event_id,
        rows=rows,
        waiting=frozenset(waiting),
        min_head=max_admitted + 1,
        max_ticket=history.max_ticket,
        statuses=dict(statuses),
    )
