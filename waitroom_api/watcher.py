"""Position streams that scale: one small Redis read per event per pass, not one per stream.

Per process there is one pub/sub subscription to ``keys.NOTIFY_CHANNEL`` (the scripts publish
an event id whenever that event's queue or checkout changed) and one ``EventWatcher`` per event
with open streams. A pass happens when its event is announced (bursts coalesced to one pass per
``stream_min_interval_seconds``) and at least every ``stream_poll_seconds``, because pub/sub is
lossy.

A pass reads the queue's shape once (``queue_view``: head, seq, the few holes past the head,
the count in checkout). A session last read as QUEUED whose place is still in ``[head, seq]``
and not a hole is still waiting with the same record (only admission, which moves the head past
it, and leaving or expiring on rejoin, which make it a hole, change a waiting record), so its
position is computed here, exactly as ``status`` would: ``place - head + 1 - holes <= place``.
A session last read as READY keeps its record until it leaves checkout, which takes it out of
the checkout count: when the count is what the admissions since the last pass explain
(``checkout_unchanged``), nobody left, and READY sessions are not read again (at most one
``stream_poll_seconds`` apart, in case). Only the other sessions (admitted, left, unknown, and
READY ones when someone left checkout) are re-read with ``status``, at most 500 per call.

Each stream is offered its read; only a change of status or position wakes it, and it renders
its newest read when its turn to send comes (``stream``). The next pass starts once a quarter
of the streams have taken their change (``UNSENT_ALLOWED``, ``Backlog``, at most
``SETTLE_TIMEOUT``), so reading overlaps sending, and the streams still waiting their turn send
the newer pass's state.

Places, not tickets: a scheduled opening's draw gives pre-queue tickets their places, so each
stream keeps the place its last ``status`` read reported (the ticket itself without a draw).
Until the draw is done (``QueueView.drawing``) every stream is re-read. With an idle timeout,
a pass also records the presence of its waiting streams, in one call, for those not recorded
for a quarter of the timeout: an open stream keeps its user present.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import Iterator

from redis.asyncio import Redis

from shared import metrics
from shared.backoff import Outage, bug, is_transient
from shared.errors import Code, WaitroomError
from shared.pubsub import NotifyListener
from shared.scripts import DrawScripts, QueueView, Scripts
from shared.settings import ApiSettings
from waitroom_api.stream import Backlog, Stream, honour_cancellation

__all__ = ["EventWatcher", "Fanout", "Stream", "checkout_unchanged", "position"]

log = logging.getLogger(__name__)

#: Most session ids per ``status`` call: keeps each script run short (it blocks Redis).
CHUNK = 500

#: How long ``Fanout.close`` waits for its tasks to end.
CLOSE_TIMEOUT = 2.0

#: Longest a pass waits for the previous pass's updates to be taken by their streams.
SETTLE_TIMEOUT = 1.0

#: Share of a watcher's streams that may still hold an unsent change when the next pass starts.
#: A pass overlaps the sending of the previous one, and the streams still waiting their turn
#: send its fresher state instead. Waiting for all (1%) made an admission wait up to a pass
#: plus a full drain (p99 2.2 s, 10,000 streams); not waiting at all let a starved process
#: spend its CPU on passes whose states were never sent. Since a pass no longer re-reads READY
#: sessions, placing 10,000 streams already awake takes 2.8 ms of CPU (process time, median of
#: 20 passes), so a quarter drained (0.75) is enough to start the next: the wait for the next
#: pass is what an admission adds to a stream's wait for its turn to send.
UNSENT_ALLOWED = 0.75


def position(view: QueueView, place: int) -> int:
    """1-based position of the session at ``place`` if it is still waiting in ``view``'s
    queue, else 0 (also while a draw is under way: positions are then read with ``status``).

    Still waiting means at or past the head, issued, and not a hole; for a session last read
    as QUEUED this is exactly the position ``status`` reports now (see the module docstring).
    """
    if view.drawing or not view.head <= place <= view.seq:
        return 0
    holes_up_to = bisect.bisect_right(view.holes, place)
    if holes_up_to and view.holes[holes_up_to - 1] == place:
        return 0
    return place - view.head + 1 - holes_up_to


def checkout_unchanged(before: QueueView | None, now: QueueView) -> bool:
    """Whether no session left checkout between two views of one queue (so a session read as
    READY before is READY still, with the same record).

    Admission is the only way into checkout, and each admitted place is one the head passed
    that was not a hole: at most ``head moved - holes it passed`` (fewer when some expired
    instead). Leaving checkout (an outcome, leaving, a lease running out) lowers the count, so
    with anyone gone the count is below ``before + that``. False whenever it cannot tell
    (no earlier view, a draw under way, a head that went back).
    """
    if before is None or before.drawing or now.drawing or now.head < before.head:
        return False
    passed_holes = bisect.bisect_left(before.holes, now.head)
    return now.in_checkout == before.in_checkout + (now.head - before.head) - passed_holes


class EventWatcher:
    """Re-reads the sessions of one event's open streams and feeds each its changes."""

    def __init__(
        self, event_id: str, scripts: Scripts, settings: ApiSettings, outage: Outage
    ) -> None:
        self.event_id = event_id
        self.scripts = scripts
        self.settings = settings
        self.outage = outage
        self.streams: dict[str, set[Stream]] = {}
        self.reads = 0  # passes over all sessions
        self.calls = 0  # status script calls they took
        self.placed = 0  # sessions placed from the queue's shape, without reading them
        self.reread = 0  # sessions read with status
        self.touches = 0  # presence calls
        self.kept = 0  # READY sessions not read again: nobody left checkout
        self.draws = DrawScripts(scripts)
        self.failures = 0
        self.backlog = Backlog()
        self._last_view: QueueView | None = None  # of the last pass that completed
        self._checkout_read = 0.0  # when READY sessions were last read (monotonic s)
        self._wake = asyncio.Event()
        self._stopped = False
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"watch {self.event_id}")

    def stop(self) -> None:
        self._stopped = True
        if self.task is not None:
            self.task.cancel()

    def add(self, stream: Stream) -> None:
        stream.backlog = self.backlog
        self.streams.setdefault(stream.session_id, set()).add(stream)

    def remove(self, stream: Stream) -> None:
        stream.detach()
        same = self.streams.get(stream.session_id)
        if same is not None:
            same.discard(stream)
            if not same:
                del self.streams[stream.session_id]

    def poke(self) -> None:
        """The event changed: re-read soon."""
        self._wake.set()

    async def refresh(self) -> None:
        """One pass: place the waiting sessions from the queue's shape, re-read the others
        (at most ``CHUNK`` per call), and offer each stream its session's state."""
        read_at = time.monotonic_ns()
        view = await self.scripts.queue_view(self.event_id)
        # READY sessions are read again only when someone left checkout (or, in case, once
        # per poll interval): with every admitted stream open, re-reading them every pass
        # was 15% of the API's samples (2,000 records decoded per pass).
        now = time.monotonic()
        keep_checkout = checkout_unchanged(self._last_view, view) and (
            now - self._checkout_read < self.settings.stream_poll_seconds
        )
        if not keep_checkout:
            self._checkout_read = now
        unread = []
        placed = kept = 0
        # No await in this loop: the streams cannot change under it.
        for session_id, streams in self.streams.items():
            for stream in streams:  # nearly always one
                if not stream.waiting:
                    break
            else:
                place = position(view, stream.place)
                if place:
                    placed += 1
                    for stream in streams:
                        stream.offer_place(place, view, read_at)
                    continue
            if keep_checkout and all(stream.in_checkout for stream in streams):
                kept += 1
                for stream in streams:
                    stream.offer_kept(view, read_at)
                continue
            unread.append(session_id)
        self.placed += placed
        self.kept += kept
        if view.idle_ms:
            await self._touch(view.idle_ms)
        for start in range(0, len(unread), CHUNK):
            read_at = time.monotonic_ns()
            result = await self.scripts.status(self.event_id, unread[start : start + CHUNK])
            self.calls += 1
            self.reread += len(result.sessions)
            for session in result.sessions:
                # Streams may have closed (or opened) while the script ran.
                for stream in tuple(self.streams.get(session.session_id, ())):
                    stream.offer(session, result, read_at)
        # Only a pass that read everything it had to may be the next one's reference.
        self._last_view = view
        self.reads += 1

    async def _touch(self, idle_ms: int) -> None:
        """Record the presence of the waiting streams not recorded for a quarter of the idle
        timeout: one call per pass, and per stream one write per quarter timeout."""
        now = time.monotonic()
        due = now - idle_ms / 4000
        touching = [
            stream
            for streams in self.streams.values()
            for stream in streams
            if stream.waiting and stream.touched <= due
        ]
        if touching:
            await self.draws.touch(self.event_id, sorted({s.ticket for s in touching}))
            self.touches += 1
            for stream in touching:
                stream.touched = now

    async def _run(self) -> None:
        poll = self.settings.stream_poll_seconds
        gap = self.settings.stream_min_interval_seconds
        last = time.monotonic()
        while not self._stopped:
            honour_cancellation()
            timeout = poll - (time.monotonic() - last)
            if timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            # Coalesce a burst of announcements (an admission wave) into one re-read.
            pause = gap - (time.monotonic() - last)
            if pause > 0:
                await asyncio.sleep(pause)
            self._wake.clear()
            last = time.monotonic()
            try:
                await self.refresh()
            except Exception as exc:
                self.failures += 1
                if is_transient(exc):
                    await asyncio.sleep(self.outage.failed(exc))
                elif isinstance(exc, WaitroomError) and exc.code is Code.RECOVERING:
                    # Redis is being checked against Kafka: streams keep what they last sent
                    # and hear the truth once it is checked (usually within a sweep).
                    await asyncio.sleep(poll)
                else:
                    # A bug must not silently freeze every stream of the event: log, go on.
                    bug(log, "stream watcher", exc, self.event_id)
                    await asyncio.sleep(poll)
                continue
            self.outage.recovered()
            # Let the streams send this pass before the next one (see Backlog).
            allowed = int(len(self.streams) * UNSENT_ALLOWED)
            await self.backlog.settle(allowed, min(poll, SETTLE_TIMEOUT))

    def __repr__(self) -> str:
        streams = sum(len(s) for s in self.streams.values())
        return (
            f"EventWatcher({self.event_id!r}, streams={streams}, reads={self.reads}, "
            f"calls={self.calls}, placed={self.placed}, reread={self.reread}, kept={self.kept}, "
            f"unsent={self.backlog.unsent}, failures={self.failures})"
        )


class Fanout:
    """All position streams of this process: one subscription, one watcher per event."""

    def __init__(self, redis: Redis, scripts: Scripts, settings: ApiSettings) -> None:
        self.redis = redis
        self.scripts = scripts
        self.settings = settings
        self.watchers: dict[str, EventWatcher] = {}
        self.notifications = 0
        self.read_outage = Outage("Redis (position stream re-reads)", log)
        self.listener = NotifyListener(
            redis,
            on_event=self._announced,
            on_resubscribe=self._resubscribed,
            outage=Outage("Redis pub/sub (position streams)", log),
            logger=log,
        )
        self._closing = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._listener = asyncio.create_task(self.listener.run(self._closing), name="listener")

    async def close(self) -> None:
        """Stop listening and watching; waits at most ``CLOSE_TIMEOUT``."""
        self._closing.set()
        tasks = [w.task for w in self.watchers.values() if w.task is not None]
        for watcher in self.watchers.values():
            watcher.stop()
        self.watchers.clear()
        if self._listener is not None:
            self._listener.cancel()
            tasks.append(self._listener)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT)
            if pending:
                log.warning("%d stream tasks did not stop in time", len(pending))

    @property
    def open_streams(self) -> int:
        return sum(len(s) for w in self.watchers.values() for s in w.streams.values())

    @contextlib.contextmanager
    def watch(self, stream: Stream) -> Iterator[Stream]:
        """Keep ``stream`` fed with its session's changes while the block runs."""
        watcher = self.watchers.get(stream.event_id)
        if watcher is None:
            watcher = EventWatcher(stream.event_id, self.scripts, self.settings, self.read_outage)
            self.watchers[stream.event_id] = watcher
            watcher.start()
        watcher.add(stream)
        metrics.STREAMS_OPEN.inc()
        try:
            yield stream
        finally:
            metrics.STREAMS_OPEN.dec()
            watcher.remove(stream)
            # No await between this check and the removal: a stream opening meanwhile either
            # finds this watcher still registered, or creates a new one.
            if not watcher.streams and self.watchers.get(stream.event_id) is watcher:
                del self.watchers[stream.event_id]
                watcher.stop()

    def _announced(self, event_id: str) -> None:
        self.notifications += 1
        watcher = self.watchers.get(event_id)
        if watcher is not None:
            watcher.poke()

    def _resubscribed(self) -> None:
        # Announcements made while the subscription was down are lost: re-read everything.
        for watcher in self.watchers.values():
            watcher.poke()

    def __repr__(self) -> str:
        return (
            f"Fanout(events={len(self.watchers)}, streams={self.open_streams}, "
            f"notifications={self.notifications})"
        )
