"""Position streams that scale: one small Redis read per event per pass, not one per stream.

Per process there is one pub/sub subscription to ``keys.NOTIFY_CHANNEL`` (the scripts publish
an event id whenever that event's queue or checkout changed) and one ``EventWatcher`` per event
with open streams. A pass happens when its event is announced (bursts coalesced to one pass per
``stream_min_interval_seconds``) and at least every ``stream_poll_seconds``, because pub/sub is
lossy and checkout leases run out without an announcement.

A pass reads the queue's shape once (``queue_view``: head, seq, the few holes past the head).
A session last read as QUEUED whose ticket is still in ``[head, seq]`` and not a hole is still
waiting with the same record (only admission, which moves the head past it, and leaving or
expiring on rejoin, which make it a hole, change a waiting record), so its position is computed
here, exactly as ``status`` would: ``ticket - head + 1 - holes <= ticket``. Only the other
sessions (admitted, left, in checkout, unknown) are re-read with ``status``, at most 500 per
call. A stream is offered every read; only a change of status or position wakes it to send,
and it renders its newest state when its turn comes, so a client that is slow (or a pass that
comes before the previous one's sends drained) never builds a backlog. The next pass starts
once half the streams have taken their change (``Backlog``, at most ``SETTLE_TIMEOUT``), so
reading overlaps sending without taking the time sending needs.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator

from prometheus_client import Counter
from redis.asyncio import Redis

from shared import metrics
from shared.backoff import Outage, bug, is_transient
from shared.errors import Code, WaitroomError
from shared.ids import ticket_of_session
from shared.proto import waitroom_pb2 as pb
from shared.pubsub import NotifyListener
from shared.scripts import QueueView, Scripts, SessionView
from shared.sessions import SessionRecord, Status
from shared.settings import ApiSettings
from waitroom_api.render import Renderer, SessionState, record_state

log = logging.getLogger(__name__)

#: Most session ids per ``status`` call: keeps each script run short (it blocks Redis).
CHUNK = 500

#: How long ``Fanout.close`` waits for its tasks to end.
CLOSE_TIMEOUT = 2.0

#: Longest a pass waits for the previous pass's updates to be taken by their streams.
SETTLE_TIMEOUT = 1.0

#: Share of a watcher's streams that may still hold an unsent change when the next pass starts.
#: Half: the pass overlaps the second half of the previous one's sending, and the streams still
#: waiting their turn send its fresher state instead. Waiting for all (1%) made an admission
#: wait up to a pass plus a full drain (p99 2.2 s, 10,000 streams); not waiting at all let a
#: starved process spend its CPU on passes whose states were never sent.
UNSENT_ALLOWED = 0.5


def honour_cancellation() -> None:
    """Raise CancelledError if this task was cancelled but the request got lost.

    redis-py can swallow a cancellation that lands inside one of its timeouts (redis/redis-py
    #2028, #2551); the loops here would then run on and block shutdown. ``cancelling()``
    still counts the request, so each loop checks it.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _ticket(session_id: str) -> int:
    """The ticket in a session id; 0 (never waiting, so always re-read) if it has none."""
    try:
        return ticket_of_session(session_id)
    except (IndexError, ValueError):
        return 0


class Backlog:
    """How many of one watcher's streams hold a change their client has not taken yet.

    The next pass waits until at most ``allowed`` are left (``settle``): reading and offering
    states much faster than the process can send them only replaces unsent ones, while taking
    the CPU the sending needs (measured: 10,000 streams, passes every 0.1 s whatever the
    sending, the watcher took 64% of the process and updates reached clients seconds late).
    """

    def __init__(self) -> None:
        self.unsent = 0
        self._allowed = 0
        self._settled = asyncio.Event()

    def added(self) -> None:
        self.unsent += 1

    def taken(self) -> None:
        self.unsent -= 1
        if self.unsent <= self._allowed:
            self._settled.set()

    async def settle(self, allowed: int, timeout: float) -> None:
        """Wait until at most ``allowed`` updates are unsent, or ``timeout`` seconds."""
        if self.unsent <= allowed:
            return
        self._allowed = allowed
        self._settled.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), timeout)

    def __repr__(self) -> str:
        return f"Backlog(unsent={self.unsent})"


class Stream:
    """One open StreamQueuePosition call: the newest read of its session, and whether the
    client has yet to get a change.

    A read is kept as its parts (record, rank, queue length, time) and turned into a state and
    a message only when the stream sends: a pass offers every stream a new read, and a stream
    whose status and position did not change, or which has not sent the previous one yet, costs
    that pass a comparison and a few stores. Only the newest read is kept, so a slow client
    costs one pending message, not a backlog, and it sends the freshest state when its turn
    comes.
    """

    def __init__(self, event_id: str, session_id: str, renderer: Renderer) -> None:
        self.event_id = event_id
        self.session_id = session_id
        self.ticket = _ticket(session_id)
        self.renderer = renderer
        self.sent = 0
        self.record: SessionRecord | None = None  # as of the newest read offered
        self.waiting = False  # whether that read found it QUEUED
        self._rank = -1  # 0-based place of the newest read (-1: not waiting)
        self._queue_length = 0
        self._now_ms = 0
        self._read_at = -1  # when the newest read offered was started, to drop older reads
        self._key: tuple[Status, int] | None = None  # status and position last offered
        self._unsent = False  # the client has yet to get the newest change
        self._error: WaitroomError | None = None
        self._ready = asyncio.Event()
        # Labelled at the first update, not here: an update means the session's record was
        # read, so its event is one an operator configured. Labelling every opened stream gave
        # each made-up event id its own series (300 made up: 600 series, /metrics 30 -> 129 KB).
        self._counted: Counter | None = None
        self.backlog: Backlog | None = None  # its watcher's, while it is watched

    @property
    def state(self) -> SessionState | None:
        """The session's state as of the newest read offered (None before the first)."""
        if self.record is None:
            return None
        return record_state(
            self.event_id,
            self.session_id,
            self.record,
            self._rank,
            self._queue_length,
            self._now_ms,
        )

    def offer(self, view: SessionView, queue_length: int, now_ms: int, read_at: int) -> None:
        """A read of this session started at ``read_at`` (``time.monotonic_ns()``); queued for
        sending if status or position changed."""
        if read_at < self._read_at:
            return  # a slower, older read finishing after a newer one
        self._read_at = read_at
        record = view.record
        if record is None:
            self._error = WaitroomError(Code.SESSION_NOT_FOUND, "session not found")
            self._ready.set()
            return
        self.record = record
        self.waiting = record.status is Status.QUEUED
        self._rank, self._queue_length, self._now_ms = view.rank, queue_length, now_ms
        state = self.state
        assert state is not None
        self._changed((state.status, state.position))

    def offer_place(self, place: int, queue: QueueView, read_at: int) -> None:
        """Offer the session as still waiting, at ``place`` in ``queue`` (read at ``read_at``),
        with the record of its last read (a waiting session's record does not change)."""
        record = self.record
        if record is None or read_at < self._read_at:
            return
        self._read_at = read_at
        self._rank, self._queue_length, self._now_ms = place - 1, queue.queue_length, queue.now_ms
        if queue.now_ms >= record.expires_ms:  # as record_state decides, without building it
            self._changed((Status.EXPIRED, 0))
        else:
            self._changed((Status.QUEUED, place))

    def _changed(self, key: tuple[Status, int]) -> None:
        if key == self._key:
            return
        self._key = key
        if not self._unsent:  # else its task is already awake and will send the newest
            self._unsent = True
            if self.backlog is not None:
                self.backlog.added()
            self._ready.set()

    def detach(self) -> None:
        """No longer watched: its unsent update no longer counts in the watcher's backlog."""
        if self._unsent and self.backlog is not None:
            self.backlog.taken()
        self.backlog = None

    async def updates(self) -> AsyncIterator[pb.PositionUpdate]:
        """Updates as they come; ends after a terminal status."""
        while True:
            await self._ready.wait()
            honour_cancellation()
            self._ready.clear()
            if self._error is not None:
                raise self._error
            if not self._unsent:
                continue
            state = self.state
            if state is None:
                continue
            self._unsent = False
            if self.backlog is not None:
                self.backlog.taken()
            self.sent += 1
            if self._counted is None:
                self._counted = metrics.STREAM_UPDATES.labels(self.event_id)
            self._counted.inc()
            yield self.renderer.position_update(state)
            if state.status.terminal:
                return

    def __repr__(self) -> str:
        return f"Stream({self.session_id!r}, sent={self.sent})"


def position(view: QueueView, ticket: int) -> int:
    """1-based position of ``ticket`` if it is still waiting in ``view``'s queue, else 0.

    Still waiting means at or past the head, issued, and not a hole; for a session last read
    as QUEUED this is exactly the position ``status`` reports now (see the module docstring).
    """
    if not view.head <= ticket <= view.seq:
        return 0
    holes_up_to = bisect.bisect_right(view.holes, ticket)
    if holes_up_to and view.holes[holes_up_to - 1] == ticket:
        return 0
    return ticket - view.head + 1 - holes_up_to


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
        self.failures = 0
        self.pass_seconds = 0.0  # time spent in passes, Redis reads included
        self.backlog = Backlog()
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
        unread = []
        # No await in this loop: the streams cannot change under it.
        for session_id, streams in self.streams.items():
            place = 0
            for stream in streams:  # nearly always one
                if not stream.waiting:
                    break
            else:
                place = position(view, stream.ticket)
            if place == 0:
                unread.append(session_id)
                continue
            self.placed += 1
            for stream in streams:
                stream.offer_place(place, view, read_at)
        for start in range(0, len(unread), CHUNK):
            read_at = time.monotonic_ns()
            result = await self.scripts.status(self.event_id, unread[start : start + CHUNK])
            self.calls += 1
            self.reread += len(result.sessions)
            for session in result.sessions:
                # Streams may have closed (or opened) while the script ran.
                for stream in tuple(self.streams.get(session.session_id, ())):
                    stream.offer(session, result.queue_length, result.now_ms, read_at)
        self.reads += 1

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
                else:
                    # A bug must not silently freeze every stream of the event: log, go on.
                    bug(log, "stream watcher", exc, self.event_id)
                    await asyncio.sleep(poll)
                continue
            self.pass_seconds += time.monotonic() - last
            self.outage.recovered()
            # Let the streams send (part of) this pass before the next one (see Backlog).
            allowed = int(len(self.streams) * UNSENT_ALLOWED)
            await self.backlog.settle(allowed, min(poll, SETTLE_TIMEOUT))

    def __repr__(self) -> str:
        streams = sum(len(s) for s in self.streams.values())
        return (
            f"EventWatcher({self.event_id!r}, streams={streams}, reads={self.reads}, "
            f"calls={self.calls}, placed={self.placed}, reread={self.reread}, "
            f"pass_seconds={self.pass_seconds:.3f}, unsent={self.backlog.unsent}, "
            f"failures={self.failures})"
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
