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
    """One open StreamQueuePosition call (see the module docstring)."""

    __slots__ = (
        "_counted",
        "_error",
        "_figures",
        "_position",
        "_rank",
        "_read_at",
        "_ready",
        "_status",
        "_unsent",
        "backlog",
        "event_id",
        "in_checkout",
        "place",
        "record",
        "renderer",
        "sent",
        "session_id",
        "ticket",
        "touched",
        "waiting",
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
        self._unsent = False  # the client has yet to get the newest change
        self._error: WaitroomError | None = None
        self._ready = asyncio.Event()
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
            self._ready.set()
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
        if not self._unsent:  # else its task is already awake and will send the newest
            self._unsent = True
            if self.backlog is not None:
                self.backlog.added()
            self._ready.set()

    def detach(self) -> None:
        """No longer watched: its unsent change no longer counts in the watcher's backlog."""
        if self._unsent and self.backlog is not None:
            self.backlog.taken()
        self.backlog = None

    async def updates(self) -> AsyncIterator[pb.PositionUpdate]:
        """Updates as they come; ends after a terminal status."""
        # Once, not per update: a cancellation swallowed by redis-py can only have been lost
        # in the read before this loop; in it, cancellation lands in the wait or the write.
        honour_cancellation()
        ready = self._ready
        while True:
            await ready.wait()
            ready.clear()
            if self._error is not None:
                raise self._error
            state = self.state
            if not self._unsent or state is None:
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
