"""The invariant checks find each kind of break (pure: no servers), and pass a clean run."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace

import pytest

from shared import messages
from shared.ids import event_suffix
from shared.sessions import SessionRecord, Status
from shared.token import mint_for
from tests.chaos import invariants as inv
from tests.chaos.crowd import Client
from tests.chaos.evidence import KafkaRecord, RedisState
from tests.chaos.stack import Exit

EVENT = "ev-check"
SECRET = "invariant-secret-0123456789abcdef-01"
T0 = 1_800_000_000_000


def sid(ticket: int) -> str:
    return f"{'n' * 21}{ticket % 10}.{ticket}.{event_suffix(EVENT)}"


def admitted(ticket: int, at: int, finished: int) -> SessionRecord:
    return SessionRecord(
        Status.COMPLETED, f"u{ticket}", ticket, T0, T0 + 10**7, at, at + 2000, finished, "done"
    )


def ready_record(ticket: int, rec: SessionRecord, offset: int = 0) -> KafkaRecord:
    body = messages.queue_ready(
        sid(ticket),
        rec.user_id,
        EVENT,
        mint_for(SECRET, sid(ticket), EVENT, rec),
        rec.admitted_ms,
        rec.checkout_deadline_ms,
        rec.admitted_ms,
    )
    return KafkaRecord(messages.QUEUE_READY, 0, offset, f"{sid(ticket)}:ready", body)


def joined_record(ticket: int, offset: int) -> KafkaRecord:
    body = messages.queue_joined(sid(ticket), f"u{ticket}", EVENT, 1, T0, T0)
    return KafkaRecord(messages.QUEUE_JOINED, 0, offset, f"{sid(ticket)}:joined", body)


def clean() -> inv.Evidence:
    """Three users admitted in ticket order with a cap of two, each seen final."""
    records = {
        1: admitted(1, T0 + 100, T0 + 300),
        2: admitted(2, T0 + 100, T0 + 500),
        3: admitted(3, T0 + 300, T0 + 600),
    }
    clients = []
    for t, rec in records.items():
        c = Client(rec.user_id, stream=True, leave_after=None, session_id=sid(t), calls=3)
        c.statuses = [(0.0, Status.QUEUED), (0.1, Status.READY), (0.2, Status.COMPLETED)]
        c.tokens = {mint_for(SECRET, sid(t), EVENT, rec)}
        clients.append(c)
    kafka = [joined_record(t, t) for t in records]
    kafka += [ready_record(t, rec, 10 + t) for t, rec in records.items()]
    redis = RedisState(exists=True, sessions={sid(t): rec for t, rec in records.items()})
    return inv.Evidence(
        event_id=EVENT,
        cap=2,
        secret=SECRET,
        clients=clients,
        kafka=kafka,
        redis=redis,
        samples=[0, 1, 2, 1, 0],
        exits=[Exit("api-0", 10, -9, "killed"), Exit("api-0", 11, 0, "stopped")],
    )


def broken(ev: inv.Evidence) -> dict[str, int]:
    return {r.invariant: r.violations for r in inv.check_all(ev) if r.broken}


def test_a_clean_run_breaks_nothing() -> None:
    rows = inv.check_all(clean())
    assert [r.violations for r in rows] == [0] * len(inv.CHECKS)
    assert all(r.checked > 0 for r in rows if not r.invariant.startswith("no internal"))


def _lose_session(ev: inv.Evidence) -> None:
    del ev.redis.sessions[sid(3)]


def _reuse_ticket(ev: inv.Evidence) -> None:
    ev.clients[0].session_id = "x" * 22 + ".1." + event_suffix(EVENT)


def _admit_again(ev: inv.Evidence) -> None:
    rec = ev.redis.sessions[sid(1)]
    ev.kafka.append(ready_record(1, replace(rec, admitted_ms=rec.admitted_ms + 50), 99))


def _skip_the_queue(ev: inv.Evidence) -> None:
    # Ticket 3 admitted before ticket 2, which was still waiting.
    ev.redis.sessions[sid(2)] = replace(ev.redis.sessions[sid(2)], admitted_ms=T0 + 400)


def _over_the_cap(ev: inv.Evidence) -> None:
    # Ticket 1 holds its slot past ticket 3's admission: three slots with a cap of two.
    ev.redis.sessions[sid(1)] = replace(ev.redis.sessions[sid(1)], finished_ms=T0 + 450)


def _forge_token(ev: inv.Evidence) -> None:
    ev.clients[1].tokens = {
        mint_for("another-secret-0123456789abcdef-012", sid(2), EVENT, ev.redis.sessions[sid(2)])
    }


def _ready_twice(ev: inv.Evidence) -> None:
    ev.clients[2].statuses += [(0.3, Status.READY), (0.4, Status.COMPLETED)]


def _lost_ready_message(ev: inv.Evidence) -> None:
    ev.kafka = [r for r in ev.kafka if r.message_id != f"{sid(2)}:ready"]


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_lose_session, "nobody lost (every acknowledged join is still known)"),
        (_reuse_ticket, "no ticket given twice"),
        (_admit_again, "nobody admitted twice"),
        (_skip_the_queue, "FIFO (admission in ticket order)"),
        (_over_the_cap, "cap never exceeded (leases and tokens outstanding)"),
        (_forge_token, "every token valid for its admission"),
        (_ready_twice, "nobody admitted twice"),
        (_lost_ready_message, "one queue.ready per admission"),
        (lambda ev: ev.samples.append(3), "cap never exceeded (sampled in Redis)"),
        (
            lambda ev: ev.exits.append(Exit("admitter-1", 12, 1, "crashed")),
            "no process crashed by itself",
        ),
        (
            lambda ev: ev.clients[0].forbidden.append("INTERNAL: boom"),
            "no INTERNAL/UNKNOWN status seen by a client",
        ),
        (lambda ev: ev.clients[0].statuses.pop(), "everyone final after the drain"),
        (lambda ev: setattr(ev.redis, "outbox", 4), "Kafka has every change (outbox relayed)"),
    ],
)
def test_each_kind_of_break_is_found(damage: Callable[[inv.Evidence], None], expected: str) -> None:
    ev = clean()
    damage(ev)
    assert expected in broken(ev)


def test_the_table_lists_every_invariant_with_its_counts() -> None:
    ev = clean()
    _lose_session(ev)
    text = inv.table(inv.check_all(ev))
    assert text.count("\n") == len(inv.CHECKS) + 1
    assert f"{sid(3)} is not in Redis" in text
    assert json.dumps([r.to_json() for r in inv.check_all(ev)])


def _lose_before_kafka(ev: inv.Evidence) -> None:
    """Ticket 3's join was acknowledged, then Redis lost it before the relay sent it."""
    del ev.redis.sessions[sid(3)]
    ev.kafka = [r for r in ev.kafka if r.body["session_id"] != sid(3)]
    ev.clients[2].statuses = ev.clients[2].statuses[:1]
    ev.clients[2].tokens = set()
    ev.clients[2].gave_up = "stream: NOT_FOUND: WTR001 unknown session"


def test_a_join_lost_before_kafka_is_counted_apart_and_breaks_nothing() -> None:
    ev = clean()
    _lose_before_kafka(ev)
    rows = {r.invariant: r for r in inv.check_all(ev)}
    lost = rows["lost before reaching Kafka (allowed)"]
    assert (lost.checked, lost.violations, lost.allowed, lost.broken) == (3, 1, True, 0)
    assert broken(ev) == {}
    assert rows["nobody lost (every acknowledged join is still known)"].checked == 2
    assert "| 1 (allowed) |" in inv.table(list(rows.values()))


def test_a_join_kafka_holds_is_never_excused() -> None:
    ev = clean()
    _lose_before_kafka(ev)
    ev.kafka.append(joined_record(3, 50))  # on Kafka after all: recovery had to bring it back
    assert "nobody lost (every acknowledged join is still known)" in broken(ev)
    assert inv.lost_before_kafka(ev).violations == 0
