"""The stream watcher places waiting sessions from the queue's shape: what every stream is
offered must be exactly what ``status`` reports, while only sessions that moved out of the queue
(or are not waiting) are read again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import pytest
from api_support import make_event

from shared.backoff import Outage
from shared.scripts import QueueView, Scripts
from shared.sessions import Status
from shared.settings import ApiSettings
from tests.support import with_scripts as run_scripts
from waitroom_api import stream as stream_module
from waitroom_api.render import Renderer, session_state
from waitroom_api.watcher import EventWatcher, Stream, checkout_unchanged, position

EVENT = "fanout1"
RENDERER = Renderer("fanout-tests-secret-0123456789abcdef", "", "")


def _watcher(scripts: Scripts) -> EventWatcher:
    return EventWatcher(EVENT, scripts, ApiSettings(), Outage("test re-reads", logging.getLogger()))


async def _open(watcher: EventWatcher, session_ids: list[str]) -> list[Stream]:
    streams = [Stream(EVENT, sid, RENDERER) for sid in session_ids]
    for stream in streams:
        watcher.add(stream)
    return streams


async def _expected(scripts: Scripts, session_ids: list[str]) -> dict[str, tuple[Status, int, int]]:
    """(status, position, queue_length) of each session as ``status`` reports it now."""
    result = await scripts.status(EVENT, session_ids)
    out = {}
    for view in result.sessions:
        state = session_state(EVENT, view, result.queue_length, result.now_ms)
        out[view.session_id] = (state.status, state.position, state.queue_length)
    return out


def _offered(streams: list[Stream]) -> dict[str, tuple[Status, int, int]]:
    out = {}
    for stream in streams:
        assert stream.state is not None, stream
        out[stream.session_id] = (
            stream.state.status,
            stream.state.position,
            stream.state.queue_length,
        )
    return out


def test_position_counts_the_holes_up_to_the_ticket() -> None:
    view = QueueView(head=10, seq=20, queue_length=8, in_checkout=0, now_ms=0, holes=[12, 15, 16])
    assert [position(view, t) for t in range(9, 22)] == [0, 1, 2, 0, 3, 4, 0, 0, 5, 6, 7, 8, 0]


def test_placed_positions_match_status_through_leaves_admissions_and_joins(
    redis_url: str,
) -> None:
    make_event(redis_url, EVENT, rate=1000, max_concurrent=1000)

    async def scenario(scripts: Scripts) -> None:
        watcher = _watcher(scripts)
        sessions = [(await scripts.join(EVENT, f"user{i}")).session_id for i in range(40)]
        streams = await _open(watcher, sessions)
        # Two streams on one session see the same thing.
        streams += await _open(watcher, [sessions[30]])
        all_ids = sessions

        async def check(step: str, change: Callable[[], Awaitable[object]]) -> int:
            """Apply ``change``, run a pass; every stream must hold what status says. Returns
            how many sessions the pass read with ``status``."""
            await change()
            before = watcher.reread
            await watcher.refresh()
            assert _offered(streams) == await _expected(scripts, all_ids), step
            return watcher.reread - before

        async def nothing() -> None:
            pass

        # First pass: nothing is known yet, everything is read.
        assert await check("first pass", nothing) == len(sessions)
        # Nothing changed: every session is placed without a read.
        assert await check("unchanged", nothing) == 0

        async def leave_some() -> None:
            for i in (2, 3, 7, 25):
                await scripts.leave(EVENT, sessions[i])

        # The four that left are read (they are holes now); the rest are placed around them.
        assert await check("leaves", leave_some) == 4

        async def admit_past_holes() -> None:
            await scripts.admit(EVENT, 6)  # tickets 1..8 minus the holes 3, 4

        # The six admitted are read; the two holes the head passed were left already (and
        # are read again only because they are not waiting).
        assert await check("admission", admit_past_holes) == 6 + 4

        async def join_more_and_leave_the_last() -> None:
            more = [(await scripts.join(EVENT, f"late{i}")).session_id for i in range(5)]
            streams.extend(await _open(watcher, more))
            all_ids.extend(more)
            await scripts.leave(EVENT, more[-1])

        # New streams are read once (the newest one left); old waiting ones are placed; the
        # four that left are read again (not waiting), the six admitted are not: nobody left
        # checkout, so their records cannot have changed.
        assert await check("joins", join_more_and_leave_the_last) == 5 + 4
        assert watcher.kept == 6

        async def finish_one_admitted() -> None:
            await scripts.finish(EVENT, sessions[0], Status.COMPLETED, "checkout_completed")

        # Someone left checkout: every READY session is read again (and the five that left).
        assert await check("checkout outcome", finish_one_admitted) == 6 + 5

        async def admit_the_rest() -> None:
            await scripts.admit(EVENT, 100)

        await check("drained", admit_the_rest)
        assert all(s.state is not None and s.state.position == 0 for s in streams)

    run_scripts(redis_url, scenario)


def test_waiting_sessions_past_their_lifetime_are_expired_without_a_read(redis_url: str) -> None:
    make_event(redis_url, EVENT, session_ttl_seconds=1)

    async def scenario(scripts: Scripts) -> None:
        watcher = _watcher(scripts)
        sessions = [(await scripts.join(EVENT, f"user{i}")).session_id for i in range(5)]
        streams = await _open(watcher, sessions)
        await watcher.refresh()
        assert {s.state.status for s in streams if s.state} == {Status.QUEUED}
        deadline = time.monotonic() + 5
        while not all(s.state and s.state.status is Status.EXPIRED for s in streams):
            assert time.monotonic() < deadline, _offered(streams)
            before = watcher.reread
            await watcher.refresh()
            assert watcher.reread == before  # their records are known: QUEUED until expiry
            await asyncio.sleep(0.1)
        # Exactly as a status read reports them: EXPIRED, no position (records still QUEUED).
        assert _offered(streams) == await _expected(scripts, sessions)

    run_scripts(redis_url, scenario)


def test_the_backlog_counts_updates_not_yet_taken_by_their_streams(redis_url: str) -> None:
    """What lets a watcher wait for its streams to send a pass before reading again."""
    make_event(redis_url, EVENT)

    async def scenario(scripts: Scripts) -> None:
        watcher = _watcher(scripts)
        sessions = [(await scripts.join(EVENT, f"user{i}")).session_id for i in range(3)]
        streams = await _open(watcher, sessions)
        await watcher.refresh()
        assert watcher.backlog.unsent == 3
        await watcher.refresh()  # nothing changed: nothing more to send
        assert watcher.backlog.unsent == 3
        first = await anext(streams[0].updates())
        assert first.position == 1
        assert watcher.backlog.unsent == 2
        watcher.remove(streams[1])  # its client went away with an update unsent
        assert watcher.backlog.unsent == 1
        await watcher.backlog.settle(1, timeout=5)  # returns at once: at most 1 unsent
        await scripts.leave(EVENT, sessions[0])
        await watcher.refresh()  # the first stream now has CANCELLED to send, the third moved
        assert watcher.backlog.unsent == 2

    run_scripts(redis_url, scenario)


def _view(head: int, in_checkout: int, holes: list[int], drawing: bool = False) -> QueueView:
    return QueueView(head, 100, 0, in_checkout, 0, holes, drawing=drawing)


def test_checkout_is_unchanged_only_when_admissions_explain_the_count() -> None:
    before = _view(10, 5, [12, 15])
    assert checkout_unchanged(before, _view(10, 5, [12, 15]))  # nothing happened
    assert checkout_unchanged(before, _view(14, 8, [15]))  # 10, 11, 13 admitted past hole 12
    assert not checkout_unchanged(before, _view(10, 4, [12, 15]))  # one left
    # One admitted and one left: the count alone would not tell.
    assert not checkout_unchanged(before, _view(11, 5, [12, 15]))
    # An expired place passed instead of admitted: a re-read it did not need, never a miss.
    assert not checkout_unchanged(before, _view(12, 6, [12, 15]))
    assert not checkout_unchanged(None, before)
    assert not checkout_unchanged(before, _view(9, 4, []))  # the head went back (a restore)
    assert not checkout_unchanged(before, _view(10, 5, [12, 15], drawing=True))


def test_a_session_leaving_checkout_is_seen_while_another_is_admitted(redis_url: str) -> None:
    """Trying to hide a checkout outcome: one admission and one outcome between two passes
    leave the checkout count as it was; the watcher must still read the READY sessions."""
    make_event(redis_url, EVENT, rate=1000, max_concurrent=1000)

    async def scenario(scripts: Scripts) -> None:
        watcher = _watcher(scripts)
        sessions = [(await scripts.join(EVENT, f"user{i}")).session_id for i in range(6)]
        streams = await _open(watcher, sessions)
        await scripts.admit(EVENT, 2)
        await watcher.refresh()
        await watcher.refresh()  # nobody left checkout: the two READY ones are kept
        assert watcher.kept == 2
        await scripts.finish(EVENT, sessions[0], Status.COMPLETED, "checkout_completed")
        await scripts.admit(EVENT, 1)
        await watcher.refresh()
        assert _offered(streams) == await _expected(scripts, sessions)
        assert streams[0].state is not None and streams[0].state.status is Status.COMPLETED
        await scripts.leave(EVENT, sessions[1])  # leaving checkout, nothing admitted
        await watcher.refresh()
        assert _offered(streams) == await _expected(scripts, sessions)
        assert streams[1].state is not None and streams[1].state.status is Status.CANCELLED

    run_scripts(redis_url, scenario)


def test_a_stream_behind_on_sending_sends_only_its_newest_state(redis_url: str) -> None:
    """Passes need not wait for sends to drain: a stream yet to send is not woken again, and
    when its turn comes it sends the newest state once, never the ones in between."""
    make_event(redis_url, EVENT, rate=1000, max_concurrent=1000)

    async def scenario(scripts: Scripts) -> None:
        watcher = _watcher(scripts)
        sessions = [(await scripts.join(EVENT, f"user{i}")).session_id for i in range(4)]
        streams = await _open(watcher, sessions)
        last = streams[-1]
        await watcher.refresh()
        assert watcher.backlog.unsent == 4
        for _ in range(2):  # two admissions, two passes, nobody sent anything meanwhile
            await scripts.admit(EVENT, 1)
            await watcher.refresh()
        assert watcher.backlog.unsent == 4
        updates = last.updates()
        first = await anext(updates)
        assert (first.status, first.position) == (Status.QUEUED, 2)
        assert watcher.backlog.unsent == 3
        await watcher.refresh()  # nothing changed: nothing more to send
        with contextlib.suppress(TimeoutError):
            extra = await asyncio.wait_for(anext(updates), 0.2)
            raise AssertionError(f"an unchanged pass sent {extra}")
        assert (last.sent, watcher.backlog.unsent) == (1, 3)

    run_scripts(redis_url, scenario)


def test_idle_streams_are_woken_in_turn_oldest_change_first(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only ``SENDING`` idle streams are woken at a time; each one taking its change (or gone)
    wakes the next in the order their changes came, and one that changes again keeps its
    place. A stream still writing is not queued: it sends its change once written."""
    monkeypatch.setattr(stream_module, "SENDING", 2)
    make_event(redis_url, EVENT, rate=1000, max_concurrent=1000)

    async def scenario(scripts: Scripts) -> None:
        watcher = _watcher(scripts)
        sessions = [(await scripts.join(EVENT, f"user{i}")).session_id for i in range(5)]
        streams = await _open(watcher, sessions)
        await watcher.refresh()
        woken = [s.ready.is_set() for s in streams]
        assert woken == [True, True, False, False, False]
        assert (watcher.backlog.woken, watcher.backlog.unsent) == (2, 5)
        await scripts.admit(EVENT, 1)
        await watcher.refresh()  # every stream changed again: none is woken out of turn
        assert [s.ready.is_set() for s in streams] == woken
        updates = streams[0].updates()
        assert (await anext(updates)).status == Status.READY
        assert streams[2].ready.is_set() and not streams[3].ready.is_set()  # the next one
        watcher.remove(streams[1])  # gone before sending: its turn passes on
        assert streams[3].ready.is_set() and not streams[4].ready.is_set()
        assert (watcher.backlog.woken, watcher.backlog.unsent) == (2, 3)
        second = await anext(streams[2].updates())
        assert (second.status, second.position) == (Status.QUEUED, 2)  # its newest, not 3
        assert streams[4].ready.is_set()
        # The first stream is writing (its update not yet taken by the client): a change
        # readies it at once, out of turn, without waking it.
        await scripts.finish(EVENT, sessions[0], Status.COMPLETED, "checkout_completed")
        await watcher.refresh()
        assert streams[0].writing and streams[0].ready.is_set() and not streams[0].woken
        assert watcher.backlog.woken == 2

    run_scripts(redis_url, scenario)
