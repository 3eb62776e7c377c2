"""One open StreamQueuePosition call: the newest read of its session, sent when its turn comes.

A read is kept as its parts (the record, the rank, and the event's figures at that instant:
queue length, time, opening, rate) and turned into a state and a message only when the stream
sends. A watcher's pass offers every stream a new read; a stream whose status and position did
not change, or which is already awake with a change it has not sent, costs that pass a
comparison and a few stores. Only the newest read is kept, so a slow client costs one pending
message, never a backlog, and when its turn comes it sends the freshest state (intermediate
ones are skipped, as a waiting user only cares where they are now).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import NamedTuple, Protocol

from prometheus_client import Counter

from shared import metrics
from shared.errors import Code, WaitroomError
from shared.ids import ticket_of_session
from shared.proto import waitroom_pb2 as pb
from shared.scripts import SessionView
from shared.sessions import SessionRecord, Status
from waitroom_api.render import Renderer, SessionState, record_state

_QUEUED = Status.QUEUED
_READY = Status.READY
_EXPIRED = Status.EXPIRED

#: Most idle streams of one watcher woken and not yet running (``Backlog``): the watcher's
#: next pass waits behind at most these (each takes about 35 us of the loop to send).
SENDING = 500


class Figures(Protocol):
    """The event's figures a read took with the session (a ``QueueView``, a ``StatusResult``
    or a ``Reading``): shared by every stream offered that read, so a pass builds none."""

    @property
    def queue_length(self) -> int: ...

    @property
    def now_ms(self) -> int: ...

    @property
    def opens_ms(self) -> int: ...

    @property
    def rate(self) -> float: ...


class Reading(NamedTuple):
    """``Figures`` given one by one."""

    queue_length: int
    now_ms: int
    opens_ms: int = 0
    rate: float = 0.0


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
    """One watcher's streams with a change their client has not taken yet, and the order in
    which idle ones are woken.

    Waking: a stream still writing its previous update takes its change as soon as that write
    is done (nothing to wake). An idle one waits for its turn: at most ``SENDING`` are woken
    and not yet running at a time, the others in the order their change came (oldest first),
    and each one that takes its change wakes the next. Waking every changed stream at once
    (10,000 idle streams when a sale opens) put them all on the event loop ahead of the
    watcher, whose next pass then started only once nearly all of them had run (0.6 s), so the
    last in line sent a state that old. A stream that changes again while waiting keeps its
    place and sends the newest state when its turn comes.

    Unsent: the next pass waits until at most ``allowed`` are left (``settle``): reading and
    offering states much faster than the process can send them only replaces unsent ones,
    while taking the CPU the sending needs (measured: 10,000 streams, passes every 0.1 s
    whatever the sending, the watcher took 64% of the process and updates reached clients
    seconds late).
    """

    def __init__(self) -> None:
        self.unsent = 0
        self.woken = 0  # idle streams woken that have not taken their change yet
        self._turns: deque[Stream] = deque()
        self._allowed = 0
        self._settled = asyncio.Event()

    def added(self, stream: Stream) -> None:
        """``stream`` has a change to send."""
        self.unsent += 1
        if stream.writing:
            stream.ready.set()  # it looks again once written: no wake-up, no turn
        else:
            self._turns.append(stream)
            self._wake()

    def taken(self, stream: Stream) -> None:
        """``stream`` took its change to send it (or its client went away)."""
        self.unsent -= 1
        if self.unsent <= self._allowed:
            self._settled.set()
        if stream.woken:
            stream.woken = False
            self.woken -= 1
            self._wake()

    def _wake(self) -> None:
        turns = self._turns
        while self.woken < SENDING and turns:
            stream = turns.popleft()
            if stream.backlog is self and stream.unsent and not stream.woken:
                self.woken += 1
                stream.woken = True
                stream.ready.set()

    async def settle(self, allowed: int, timeout: float) -> None:
        """Wait until at most ``allowed`` updates are unsent, or ``timeout`` seconds."""
        if self.unsent <= allowed:
            return
        self._allowed = allowed
        self._settled.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), timeout)

    def __repr__(self) -> str:
        return f"Backlog(unsent={self.unsent}, woken={self.woken})"


class Stream:
    """One open StreamQueuePosition call (see the module docstring)."""

    __slots__ = (
        "_counted",
        "_error",
        "_figures",
        "_position",
        "_rank",
        "_read_at",
        "_status",
        "backlog",
        "event_id",
        "in_checkout",
        "place",
        "ready",
        "record",
        "renderer",
        "sent",
        "session_id",
        "ticket",
        "touched",
        "unsent",
        "waiting",
        "woken",
        "writing",
    )

    def __init__(self, event_id: str, session_id: str, renderer: Renderer) -> None:
        self.event_id = event_id
        self.session_id = session_id
        self.ticket = _ticket(session_id)
        self.place = 0  # its place in the queue as of the newest read (0: unknown)
        self.touched = 0.0  # when this process last recorded its presence (monotonic s)
        self.renderer = renderer
        self.sent = 0
        self.record: SessionRecord | None = None  # as of the newest read offered
        self.waiting = False  # whether that read found it QUEUED
        self.in_checkout = False  # whether that read found it READY
        self.backlog: Backlog | None = None  # its watcher's, while it is watched
        self._rank = -1  # 0-based rank of the newest read (-1: not waiting)
        self._figures: Figures = Reading(0, 0)
        self._read_at = -1  # when the newest read offered was started, to drop older reads
        self._status: Status | None = None  # status and position last offered
        self._position = 0
        self.unsent = False  # the client has yet to get the newest change
        self.woken = False  # woken in its turn and yet to take its change (Backlog)
        self.writing = False  # grpc is writing its last update
        self.ready = asyncio.Event()  # set when it may send (or must end: an error)
        self._error: WaitroomError | None = None
        # Labelled at the first update, not here: an update means the session's record was
        # read, so its event is one an operator configured. Labelling every opened stream gave
        # each made-up event id its own series (300 made up: 600 series, /metrics 30 -> 129 KB).
        self._counted: Counter | None = None

    @property
    def state(self) -> SessionState | None:
        """The session's state as of the newest read offered (None before the first)."""
        if self.record is None:
            return None
        f = self._figures
        return record_state(
            self.event_id,
            self.session_id,
            self.record,
            self._rank,
            f.queue_length,
            f.now_ms,
            f.opens_ms,
            f.rate,
        )

    def offer(self, view: SessionView, figures: Figures, read_at: int) -> None:
        """A read of this session (``status``), started at ``read_at``
        (``time.monotonic_ns()``), with the event's figures of that read; queued for sending
        if status or position changed."""
        if read_at < self._read_at:
            return  # a slower, older read finishing after a newer one
        self._read_at = read_at
        self.place = view.place
        record = self.record = view.record
        if record is None:
            self.waiting = self.in_checkout = False
            self._error = WaitroomError(Code.SESSION_NOT_FOUND, "session not found")
            self.ready.set()
            return
        status = record.status
        self.waiting = status is _QUEUED
        self.in_checkout = status is _READY
        self._rank, self._figures = view.rank, figures
        position = 0
        if record.queue_expired(figures.now_ms):  # as record_state decides
            status = _EXPIRED
        elif status is _QUEUED and view.rank >= 0:
            position = view.rank + 1
        self._changed(status, position)

    def offer_place(self, position: int, queue: Figures, read_at: int) -> None:
        """Offer the session as still waiting, at ``position`` in ``queue`` (read at
        ``read_at``), with the record of its last read (a waiting session's record does not
        change). The hot path of a pass: no state is built here."""
        record = self.record
        if record is None or read_at < self._read_at:
            return
        self._read_at = read_at
        self._rank = position - 1
        self._figures = queue
        if queue.now_ms >= record.expires_ms:  # as record_state decides, without building it
            self._changed(_EXPIRED, 0)
        else:
            self._changed(_QUEUED, position)

    def offer_kept(self, queue: Figures, read_at: int) -> None:
        """Offer the record of its last read as still current, with ``queue``'s figures: a
        READY session while nobody left checkout (see ``watcher.checkout_unchanged``). Its
        status and position cannot have changed, so nothing is sent."""
        if self.record is not None and read_at >= self._read_at:
            self._read_at = read_at
            self._figures = queue

    def _changed(self, status: Status, position: int) -> None:
        if position == self._position and status is self._status:
            return
        self._status, self._position = status, position
        if not self.unsent:  # else it will send the newest when it gets to send
            self.unsent = True
            if self.backlog is not None:
                self.backlog.added(self)
            else:
                self.ready.set()

    def detach(self) -> None:
        """No longer watched: its unsent change no longer counts in the watcher's backlog,
        and its turn to send passes on."""
        backlog, self.backlog = self.backlog, None
        if backlog is not None and self.unsent:
            backlog.taken(self)

    async def updates(self) -> AsyncIterator[pb.PositionUpdate]:
        """Updates as they come; ends after a terminal status."""
        # Once, not per update: a cancellation swallowed by redis-py can only have been lost
        # in the read before this loop; in it, cancellation lands in the wait or the write.
        honour_cancellation()
        ready = self.ready
        while True:
            await ready.wait()
            ready.clear()
            if self._error is not None:
                raise self._error
            state = self.state
            if not self.unsent or state is None:
                continue
            self.unsent = False
            if self.backlog is not None:
                self.backlog.taken(self)
            self.sent += 1
            if self._counted is None:
                self._counted = metrics.STREAM_UPDATES.labels(self.event_id)
            self._counted.inc()
            self.writing = True
            try:
                yield self.renderer.position_update(state)
            finally:
                self.writing = False
            if state.status.terminal:
                return

    def __repr__(self) -> str:
        return f"Stream({self.session_id!r}, sent={self.sent})"
