"""The invariants of "nothing lost, whatever fails", checked on what a chaos run left behind.

Pure functions of the evidence: what each client saw, every Kafka record of the event, the
event's state in Redis at the end, the checkout sizes sampled during the run, and how each
process exited. Each check returns a row: what it checked, how many it checked, how many broke
it, and a few examples of the breaks.

One row is not an invariant but the loss the waitroom allows (docs/reliability.md): joins
acknowledged to a client whose ``queue.joined`` never reached Kafka, when Redis then lost its
last writes. They are counted apart, from what the clients saw acknowledged against what
``queue.joined`` holds, and left out of "nobody lost" and "everyone final"; nothing else is
excused.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from shared import messages
from shared.ids import ticket_of_session
from shared.sessions import SessionRecord, Status
from shared.timefmt import parse_timestamp
from shared.token import mint_for, verify_signature
from tests.chaos.crowd import Client
from tests.chaos.evidence import KafkaRecord, RedisState
from tests.chaos.stack import Exit

EXAMPLES = 5
#: Tokens are checked against the admission they were minted for, not the clock: a run's
#: checkout slots last seconds, and the verdict must not depend on when the check runs.
NO_EXPIRY = 10**9


@dataclass
class Row:
    """One line of the invariant table."""

    invariant: str
    checked: int
    violations: int
    examples: list[str] = field(default_factory=list)
    #: The count is a loss the waitroom allows: shown, never a failure of the run.
    allowed: bool = False

    @property
    def broken(self) -> int:
        """What this row counts against the run."""
        return 0 if self.allowed else self.violations

    def to_json(self) -> dict[str, Any]:
        return {
            "invariant": self.invariant,
            "checked": self.checked,
            "violations": self.violations,
            "allowed": self.allowed,
            "examples": self.examples,
        }


@dataclass
class Evidence:
    event_id: str
    cap: int
    secret: str
    clients: list[Client]
    kafka: list[KafkaRecord]
    redis: RedisState
    samples: list[int]
    exits: list[Exit]
    bugs_logged: list[str] = field(default_factory=list)

    def acked(self) -> list[Client]:
        return [c for c in self.clients if c.session_id]

    def lost_before_kafka(self) -> list[Client]:
        """Clients told their join succeeded whose ``queue.joined`` is not on Kafka and whose
        session Redis does not hold: the joins a lost second of Redis took with it."""
        joined = {r.body["session_id"] for r in self.topic(messages.QUEUE_JOINED)}
        return [
            c
            for c in self.acked()
            if c.session_id not in joined and c.session_id not in self.redis.sessions
        ]

    def kept(self) -> list[Client]:
        """The acknowledged joins everything must hold for: all but those lost before Kafka."""
        lost = {c.session_id for c in self.lost_before_kafka()}
        return [c for c in self.acked() if c.session_id not in lost]

    def topic(self, topic: str) -> list[KafkaRecord]:
        return [r for r in self.kafka if r.topic == topic]


def _row(name: str, checked: int, broken: Iterable[str]) -> Row:
    found = list(broken)
    return Row(name, checked, len(found), found[:EXAMPLES])


def _ms(text: str) -> int:
    return round(parse_timestamp(text).timestamp() * 1000)


def lost_before_kafka(ev: Evidence) -> Row:
    """The allowed loss: acknowledged joins that never reached Kafka (module docstring)."""
    lost = [f"{c.user_id}: {c.session_id}" for c in ev.lost_before_kafka()]
    row = _row("lost before reaching Kafka (allowed)", len(ev.acked()), lost)
    row.allowed = True
    return row


def nobody_lost(ev: Evidence) -> Row:
    """Every acknowledged join that reached Kafka still has its session in Redis, and no
    client was told it was gone."""
    broken = []
    kept = ev.kept()
    for c in kept:
        if c.session_id not in ev.redis.sessions:
            broken.append(f"{c.user_id}: session {c.session_id} is not in Redis")
        elif "NOT_FOUND" in c.gave_up:
            broken.append(f"{c.user_id}: {c.gave_up}")
    return _row("nobody lost (every acknowledged join is still known)", len(kept), broken)


def tickets_unique(ev: Evidence) -> Row:
    """No ticket was handed to two sessions (clients, Kafka and Redis all agree)."""
    holders: dict[int, set[str]] = defaultdict(set)
    sids = [c.session_id for c in ev.acked()]
    sids += [r.body["session_id"] for r in ev.topic(messages.QUEUE_JOINED)]
    sids += list(ev.redis.sessions)
    for sid in sids:
        holders[ticket_of_session(sid)].add(sid)
    broken = [f"ticket {t}: {len(s)} sessions" for t, s in sorted(holders.items()) if len(s) > 1]
    return _row("no ticket given twice", len(holders), broken)


def _admissions(ev: Evidence) -> dict[str, set[int]]:
    """Session id -> every admission time (ms) Kafka or Redis shows for it."""
    times: dict[str, set[int]] = defaultdict(set)
    for r in ev.topic(messages.QUEUE_READY):
        times[r.body["session_id"]].add(_ms(r.body["admitted_at"]))
    for sid, rec in ev.redis.sessions.items():
        if rec.admitted_ms:
            times[sid].add(rec.admitted_ms)
    return times


def admitted_once(ev: Evidence) -> Row:
    """One admission per session and per user; no client saw two READY periods."""
    admissions = _admissions(ev)
    broken = [f"{sid}: admitted {len(t)} times" for sid, t in admissions.items() if len(t) > 1]
    per_user: dict[str, set[str]] = defaultdict(set)
    for r in ev.topic(messages.QUEUE_READY):
        per_user[r.body["user_id"]].add(r.body["session_id"])
    for sid, rec in ev.redis.sessions.items():
        if rec.admitted_ms:
            per_user[rec.user_id].add(sid)
    broken += [f"{u}: {len(s)} sessions admitted" for u, s in per_user.items() if len(s) > 1]
    broken += [
        f"{c.user_id}: saw READY {c.ready_periods} times" for c in ev.clients if c.ready_periods > 1
    ]
    return _row("nobody admitted twice", len(admissions), broken)


def cap_sampled(ev: Evidence) -> Row:
    over = [f"{n} in checkout (cap {ev.cap})" for n in ev.samples if n > ev.cap]
    return _row("cap never exceeded (sampled in Redis)", len(ev.samples), over)


def cap_outstanding(ev: Evidence) -> Row:
    """At no moment were more slots held (leases, or tokens not yet revoked or expired) than
    the cap. A slot runs from admission to the session's finish in Redis; an admission Redis no
    longer knows holds its token until the token expires."""
    ready = {}
    for r in ev.topic(messages.QUEUE_READY):
        ready[(r.body["session_id"], _ms(r.body["admitted_at"]))] = _ms(r.body["expires_at"])
    for sid, rec in ev.redis.sessions.items():
        if rec.admitted_ms:
            ready.setdefault((sid, rec.admitted_ms), rec.checkout_deadline_ms)
    moments: list[tuple[int, int, str]] = []  # (time, 0 release | 1 admission, session)
    for (sid, admitted), expires in ready.items():
        now = ev.redis.sessions.get(sid)
        if now is not None and now.admitted_ms == admitted:
            end = now.finished_ms if now.status.terminal else math.inf
        else:
            end = expires
        moments.append((admitted, 1, sid))
        if end != math.inf:
            moments.append((int(end), 0, sid))
    held, broken = 0, []
    # Releases sort before admissions at the same ms: one script reclaims, then admits.
    for _at, kind, sid in sorted(moments):
        held += 1 if kind else -1
        if kind and held > ev.cap:
            broken.append(f"{held} slots held when {sid} was admitted (cap {ev.cap})")
    return _row("cap never exceeded (leases and tokens outstanding)", len(ready), broken)


def fifo(ev: Evidence) -> Row:
    """Admission follows ticket order: when a session is admitted, every session with an
    earlier ticket has already been admitted or has left the queue."""
    by_ticket = sorted(ev.redis.sessions.values(), key=lambda rec: rec.ticket)
    left_by = -math.inf  # the latest moment an earlier ticket left the queue
    blocker = ""
    broken, checked = [], 0
    for rec in by_ticket:
        if rec.admitted_ms:
            checked += 1
            if left_by > rec.admitted_ms:
                broken.append(f"ticket {rec.ticket} admitted before ticket {blocker}")
        departed = rec.admitted_ms or (rec.finished_ms if rec.status.terminal else math.inf)
        if departed > left_by:
            left_by, blocker = departed, str(rec.ticket)
    return _row("FIFO (admission in ticket order)", checked, broken)


def one_ready_per_admission(ev: Evidence) -> Row:
    """Each admission in Redis has exactly one ``queue.ready`` (after dedup by message id) with
    its admission time, and no ``queue.ready`` reports an admission Redis does not hold."""
    ready: dict[str, set[int]] = defaultdict(set)
    for r in ev.topic(messages.QUEUE_READY):
        ready[r.body["session_id"]].add(_ms(r.body["admitted_at"]))
    admitted = {sid: rec for sid, rec in ev.redis.sessions.items() if rec.admitted_ms}
    broken = []
    for sid, rec in admitted.items():
        if rec.admitted_ms not in ready.get(sid, set()):
            broken.append(f"{sid}: admitted in Redis, no queue.ready for that admission")
    for sid, times in ready.items():
        if sid not in admitted:
            broken.append(f"{sid}: queue.ready for an admission Redis does not hold")
        elif len(times) > 1:
            broken.append(f"{sid}: {len(times)} different queue.ready admissions")
    return _row("one queue.ready per admission", len(set(ready) | set(admitted)), broken)


def tokens_valid(ev: Evidence) -> Row:
    """Every token a client or Kafka carried verifies, and is the one minted for the session's
    admission as Redis records it."""
    tokens = {r.body["checkout_token"] for r in ev.topic(messages.QUEUE_READY)}
    for c in ev.clients:
        tokens |= c.tokens
    broken = []
    for token in sorted(tokens):
        verdict = verify_signature(ev.secret, token, leeway=NO_EXPIRY)
        if not verdict.valid or verdict.claims is None:
            broken.append(f"{token[:24]}...: {verdict.reason}")
            continue
        sid = verdict.claims.session_id
        rec = ev.redis.sessions.get(sid)
        if rec is None or not rec.admitted_ms:
            broken.append(f"{sid}: token for an admission Redis does not hold")
        elif token != mint_for(ev.secret, sid, ev.event_id, rec):
            broken.append(f"{sid}: token differs from the one minted for its admission")
    return _row("every token valid for its admission", len(tokens), broken)


def everyone_final(ev: Evidence) -> Row:
    """After the faults stop and the sale drains, every acknowledged session is final in Redis
    and its client saw the final status."""
    broken = []
    kept = ev.kept()
    for c in kept:
        rec: SessionRecord | None = ev.redis.sessions.get(c.session_id)
        if rec is None or not rec.status.terminal:
            state = rec.status.name if rec else "missing"
            broken.append(f"{c.user_id}: {state} in Redis")
        elif not c.final:
            broken.append(f"{c.user_id}: final in Redis, client last saw {Status(c.status).name}")
    return _row("everyone final after the drain", len(kept), broken)


def outbox_relayed(ev: Evidence) -> Row:
    """Kafka holds every change Redis made: a ``queue.joined`` per session, a ``queue.left``
    per session that left or expired, and the outbox is empty."""
    joined = {r.body["session_id"] for r in ev.topic(messages.QUEUE_JOINED)}
    left = {r.body["session_id"] for r in ev.topic(messages.QUEUE_LEFT)}
    broken = [f"{ev.redis.outbox} records still in the outbox"] if ev.redis.outbox else []
    for sid, rec in ev.redis.sessions.items():
        if sid not in joined:
            broken.append(f"{sid}: no queue.joined")
        if rec.status in (Status.CANCELLED, Status.EXPIRED) and sid not in left:
            broken.append(f"{sid}: {rec.status.name} without queue.left")
    return _row("Kafka has every change (outbox relayed)", len(ev.redis.sessions), broken)


def no_crash(ev: Evidence) -> Row:
    """Only the processes the schedule killed died; each stopped cleanly (exit 0) at the end."""
    broken = [
        f"{e.name} pid {e.pid} exited {e.code} by itself: {e.log_tail[-200:]}"
        for e in ev.exits
        if e.cause == "crashed"
    ]
    return _row("no process crashed by itself", len(ev.exits), broken)


def no_bug_logged(ev: Evidence) -> Row:
    return _row("no internal error logged by a process", len(ev.exits), ev.bugs_logged)


def no_internal_status(ev: Evidence) -> Row:
    calls = sum(c.calls for c in ev.clients)
    broken = [f"{c.user_id}: {f}" for c in ev.clients for f in c.forbidden]
    return _row("no INTERNAL/UNKNOWN status seen by a client", calls, broken)


CHECKS: tuple[Callable[[Evidence], Row], ...] = (
    nobody_lost,
    lost_before_kafka,
    tickets_unique,
    admitted_once,
    cap_sampled,
    cap_outstanding,
    fifo,
    one_ready_per_admission,
    tokens_valid,
    everyone_final,
    outbox_relayed,
    no_crash,
    no_bug_logged,
    no_internal_status,
)


def check_all(ev: Evidence) -> list[Row]:
    return [check(ev) for check in CHECKS]


def table(rows: list[Row]) -> str:
    """The invariant table in Markdown (it reads well in a terminal too)."""
    lines = ["| invariant | checked | violations | first examples |", "|---|---:|---:|---|"]
    for r in rows:
        shown = "; ".join(r.examples).replace("|", "/")
        count = f"{r.violations:,} (allowed)" if r.allowed and r.violations else f"{r.violations:,}"
        lines.append(f"| {r.invariant} | {r.checked:,} | {count} | {shown} |")
    return "\n".join(lines)
