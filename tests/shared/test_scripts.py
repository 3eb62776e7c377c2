"""The Lua scripts against a real Redis: the state changes every process relies on."""

from __future__ import annotations

import asyncio
from typing import TypeVar

import pytest

from shared import keys, outbox
from shared.errors import Refused, WaitroomError
from shared.events import EventConfig, EventState, EventStore
from shared.ids import ticket_of_session
from shared.scripts import FinishOutcome, LeaveOutcome, Scripts
from shared.sessions import Status
from shared.token import check_revocation, mint_for, verify
from tests.support import with_scripts as run

T = TypeVar("T")
SECRET = "scripts-secret-0123456789abcdef-0123"


async def make_event(s: Scripts, event_id: str, **settings: object) -> None:
    await EventStore(s.redis, s).create(EventConfig(event_id, **settings))  # type: ignore[arg-type]


async def join_many(s: Scripts, event_id: str, n: int) -> list[str]:
    return [(await s.join(event_id, f"user{i}")).session_id for i in range(n)]


def test_join_is_fifo_idempotent_and_recorded_in_the_outbox(redis_url: str, event_id: str) -> None:
    async def body(s: Scripts) -> None:
        await make_event(s, event_id)
        first = [await s.join(event_id, f"u{i}") for i in range(3)]
        assert [j.position for j in first] == [1, 2, 3]
        assert all(j.created for j in first)
        again = await s.join(event_id, "u1")
        assert (again.session_id, again.position, again.created) == (first[1].session_id, 2, False)
        records = await outbox.read(s.redis, event_id, 100)
        assert [(r.topic, r.fields["session_id"]) for r in records] == [
            ("queue.joined", j.session_id) for j in first
        ]
        assert [r.fields["position"] for r in records] == [1, 2, 3]

    run(redis_url, body)


def test_join_refuses_unknown_closed_and_full_events_without_writing(
    redis_url: str, event_id: str
) -> None:
    async def body(s: Scripts) -> None:
        with pytest.raises(WaitroomError, match="WTR006"):
            await s.join("nope", "u")
        await make_event(s, event_id, max_queue=1)
        await s.join(event_id, "u0")
        with pytest.raises(WaitroomError, match="WTR005"):
            await s.join(event_id, "u1")
        await EventStore(s.redis, s).set_state(event_id, EventState.CLOSED)
        with pytest.raises(WaitroomError, match="WTR009"):
            await s.join(event_id, "u2")
        assert (await s.status(event_id, [])).queue_length == 1
        assert await s.redis.hlen(keys.sessions(event_id)) == 1
        assert await s.redis.xlen(keys.outbox(event_id)) == 1

    run(redis_url, body)


def test_admit_keeps_the_cap_and_order_and_leave_frees_the_slot(
    redis_url: str, event_id: str
) -> None:
    async def body(s: Scripts) -> None:
        await make_event(s, event_id, max_concurrent=3, rate=1000)
        sids = await join_many(s, event_id, 6)
        result = await s.admit(event_id, 10)
        assert result is not None
        assert (result.admitted, result.in_checkout, result.queue_length) == (3, 3, 3)
        status = await s.status(event_id, sids)
        assert [v.record.status for v in status.sessions if v.record] == [Status.READY] * 3 + [
            Status.QUEUED
        ] * 3
        assert [v.rank for v in status.sessions] == [-1, -1, -1, 0, 1, 2]
        again = await s.admit(event_id, 10)
        assert again is not None and again.admitted == 0 and again.retry_ms == -1

        assert await s.leave(event_id, sids[1]) == (LeaveOutcome.LEFT, Status.READY)
        assert await s.leave(event_id, sids[1]) == (LeaveOutcome.ALREADY, Status.CANCELLED)
        third = await s.admit(event_id, 10)
        assert third is not None and third.admitted == 1
        after = await s.status(event_id, [sids[3]])
        assert after.sessions[0].record is not None
        assert after.sessions[0].record.status is Status.READY

    run(redis_url, body)


def test_concurrent_admitters_never_exceed_the_cap(redis_url: str, event_id: str) -> None:
    async def body(s: Scripts) -> None:
        await make_event(s, event_id, max_concurrent=25, rate=100000)
        sids = await join_many(s, event_id, 200)
        results = await asyncio.gather(*(s.admit(event_id, 7) for _ in range(20)))
        assert sum(r.admitted for r in results if r) == 25
        assert await s.redis.zcard(keys.checkout(event_id)) == 25
        admitted = await s.redis.zrange(keys.checkout(event_id), 0, -1)
        assert sorted(int(m) for m in admitted) == [ticket_of_session(x) for x in sids[:25]]

    run(redis_url, body)


def test_token_bucket_limits_the_admission_rate(redis_url: str, event_id: str) -> None:
    async def body(s: Scripts) -> None:
        await make_event(s, event_id, rate=20)  # capacity: 2 users (a tenth of a second)
        await join_many(s, event_id, 50)
        first = await s.admit(event_id, 100)
        assert first is not None and first.admitted == 2
        second = await s.admit(event_id, 100)
        assert second is not None and second.admitted == 0 and 0 < second.retry_ms <= 50

    run(redis_url, body)


def test_expired_queued_sessions_are_skipped_and_closed(redis_url: str, event_id: str) -> None:
    async def body(s: Scripts) -> None:
        await make_event(s, event_id, session_ttl_seconds=1, rate=1000)
        old = await join_many(s, event_id, 2)
        await asyncio.sleep(1.1)
        fresh = (await s.join(event_id, "late")).session_id
        result = await s.admit(event_id, 10)
        assert result is not None and (result.admitted, result.expired) == (1, 2)
        status = await s.status(event_id, [*old, fresh])
        assert [v.record.status for v in status.sessions if v.record] == [
            Status.EXPIRED,
            Status.EXPIRED,
            Status.READY,
        ]
        assert (await s.status(event_id, [])).queue_length == 0
        # The expired users may join again and get a new place.
        rejoin = await s.join(event_id, "user0")
        assert rejoin.created and rejoin.session_id != old[0]

    run(redis_url, body)


def test_checkout_leases_run_out_and_are_reclaimed(redis_url: str, event_id: str) -> None:
    async def body(s: Scripts) -> None:
        await make_event(s, event_id, max_concurrent=1, checkout_ttl_seconds=1, rate=1000)
        sids = await join_many(s, event_id, 2)
        first = await s.admit(event_id, 10)
        assert first is not None and first.admitted == 1 and first.next_lease_ms > 0
        await asyncio.sleep(1.1)
        second = await s.admit(event_id, 10)
        assert second is not None and (second.reclaimed, second.admitted) == (1, 1)
        status = await s.status(event_id, sids)
        assert [v.record.status for v in status.sessions if v.record] == [
            Status.EXPIRED,
            Status.READY,
        ]
        left = [r for r in await outbox.read(s.redis, event_id, 100) if r.topic == "queue.left"]
        assert [r.fields["reason"] for r in left] == ["checkout_expired"]

    run(redis_url, body)


def test_finish_is_idempotent_and_revokes_the_token(redis_url: str, event_id: str) -> None:
    async def body(s: Scripts) -> None:
        await make_event(s, event_id, max_concurrent=1, rate=1000)
        sid, queued = await join_many(s, event_id, 2)
        await s.admit(event_id, 10)
        record = (await s.status(event_id, [sid])).sessions[0].record
        assert record is not None
        token = mint_for(SECRET, sid, event_id, record)
        assert (await verify(s, SECRET, token)).valid
        assert (
            await s.finish(event_id, queued, Status.COMPLETED, "completed")
            is FinishOutcome.NOT_ADMITTED
        )
        assert await s.finish(event_id, sid, Status.COMPLETED, "completed") is FinishOutcome.DONE
        done = await s.finish(event_id, sid, Status.COMPLETED, "completed")
        assert done is FinishOutcome.ALREADY
        unknown = await s.finish(event_id, "unknown.ZQ", Status.FAILED, "failed")
        assert unknown is FinishOutcome.UNKNOWN
        verdict = await verify(s, SECRET, token)
        assert not verdict.valid and verdict.reason == "revoked: the session is COMPLETED"
        assert await s.redis.zcard(keys.checkout(event_id)) == 0
        assert check_revocation(verdict, None) is verdict

    run(redis_url, body)


def test_finish_many_applies_outcomes_in_one_round_trip(redis_url: str, event_id: str) -> None:
    async def body(s: Scripts) -> None:
        await make_event(s, event_id, max_concurrent=2, rate=1000)
        a, b, waiting = await join_many(s, event_id, 3)
        await s.admit(event_id, 10)
        results = await s.finish_many(
            [
                (event_id, a, Status.COMPLETED, "completed"),
                (event_id, b, Status.FAILED, "failed"),
                (event_id, a, Status.FAILED, "failed"),
                (event_id, waiting, Status.COMPLETED, "completed"),
            ]
        )
        done, already, queued = (
            FinishOutcome.DONE,
            FinishOutcome.ALREADY,
            FinishOutcome.NOT_ADMITTED,
        )
        assert results == [done, done, already, queued]
        status = await s.status(event_id, [a, b])
        assert [v.record.status for v in status.sessions if v.record] == [
            Status.COMPLETED,
            Status.FAILED,
        ]

    run(redis_url, body)


def test_paused_events_admit_nobody_and_closed_ones_drain(redis_url: str, event_id: str) -> None:
    async def body(s: Scripts) -> None:
        store = EventStore(s.redis, s)
        await make_event(s, event_id, state=EventState.PAUSED, rate=1000)
        await join_many(s, event_id, 3)
        paused = await s.admit(event_id, 10)
        assert paused is not None and paused.admitted == 0 and paused.retry_ms == -1
        await store.set_state(event_id, EventState.CLOSED)
        closed = await s.admit(event_id, 10)
        assert closed is not None and closed.admitted == 3

    run(redis_url, body)


def test_purge_forgets_only_old_finished_sessions(redis_url: str, event_id: str) -> None:
    async def body(s: Scripts) -> None:
        await make_event(s, event_id)
        gone, kept = await join_many(s, event_id, 2)
        await s.leave(event_id, gone)
        assert await s.purge(event_id, 60_000, 100) == 0
        await asyncio.sleep(0.05)
        assert await s.purge(event_id, 10, 100) == 1
        status = await s.status(event_id, [gone, kept])
        assert [v.record is not None for v in status.sessions] == [False, True]

    run(redis_url, body)


def test_locks_renew_and_release_only_for_their_owner(redis_url: str, event_id: str) -> None:
    async def body(s: Scripts) -> None:
        key = keys.lock(event_id)
        assert await s.redis.set(key, "mine", nx=True, px=5000)
        assert not await s.redis.set(key, "theirs", nx=True, px=5000)
        assert not await s.renew_lock(key, "theirs", 5000)
        assert not await s.release_lock(key, "theirs")
        assert await s.renew_lock(key, "mine", 9000)
        assert 5000 < await s.redis.pttl(key) <= 9000
        assert await s.release_lock(key, "mine")
        assert await s.redis.exists(key) == 0

    run(redis_url, body)


def test_event_config_round_trips_and_validates(redis_url: str, event_id: str) -> None:
    async def body(s: Scripts) -> None:
        store = EventStore(s.redis, s)
        created = await store.create(EventConfig(event_id, max_concurrent=7, rate=2.5))
        assert (created.max_concurrent, created.rate, created.state) == (7, 2.5, EventState.OPEN)
        with pytest.raises(Refused, match="exists; use `waitroom event update`") as refused:
            await store.create(EventConfig(event_id))
        assert not isinstance(refused.value, WaitroomError)  # no contract code (WTR003)
        updated = await store.update(event_id, checkout_ttl_seconds=60)
        assert updated.checkout_ttl_seconds == 60 and updated.max_concurrent == 7
        with pytest.raises(WaitroomError, match="rate must be above 0"):
            await store.update(event_id, rate=0)
        with pytest.raises(WaitroomError, match="WTR006"):
            await store.update("missing-event", rate=5)
        assert await store.list_ids() == [event_id]

    run(redis_url, body)


def test_finish_many_sends_one_script_call_per_event(redis_url: str, event_id: str) -> None:
    events = [f"{event_id}-{n}" for n in range(3)]

    async def body(s: Scripts) -> None:
        batch = []
        for event in events:
            await make_event(s, event, max_concurrent=4, rate=1000)
            sids = await join_many(s, event, 4)
            await s.admit(event, 10)
            batch += [(event, sid, Status.COMPLETED, "completed") for sid in sids]
        batch.append((events[0], batch[0][1], Status.FAILED, "failed"))  # a repeat: no-op
        await s.redis.config_resetstat()
        results = await s.finish_many(batch)
        calls = (await s.redis.info("commandstats"))["cmdstat_evalsha"]["calls"]
        assert calls == len(events)
        assert results == [FinishOutcome.DONE] * 12 + [FinishOutcome.ALREADY]
        for event in events:
            assert await s.redis.zcard(keys.checkout(event)) == 0

    run(redis_url, body)


def test_finish_many_keeps_outcomes_apart_whatever_their_ids_hold(
    redis_url: str, event_id: str
) -> None:
    # Outcomes travel packed (items concatenated, byte lengths apart): ids with separators,
    # multi-byte characters or nothing at all must neither shift nor merge their neighbours.
    odd = ["", " ", "1 2 3", "é.1.ü", "\n.1.\n", "a" * 300]

    async def body(s: Scripts) -> None:
        await make_event(s, event_id, max_concurrent=2, rate=1000)
        a, b = await join_many(s, event_id, 2)
        await s.admit(event_id, 10)
        batch = [(event_id, sid, Status.COMPLETED, "completed") for sid in odd]
        batch.insert(3, (event_id, a, Status.FAILED, "fail ed"))
        batch.append((event_id, b, Status.EXPIRED, "expired"))
        results = await s.finish_many(batch)
        assert results == [FinishOutcome.UNKNOWN] * 3 + [FinishOutcome.DONE] + [
            FinishOutcome.UNKNOWN
        ] * 3 + [FinishOutcome.DONE]
        views = (await s.status(event_id, [a, b])).sessions
        assert [(v.record.status, v.record.reason) for v in views if v.record] == [
            (Status.FAILED, "fail ed"),
            (Status.EXPIRED, "expired"),
        ]

    run(redis_url, body)
