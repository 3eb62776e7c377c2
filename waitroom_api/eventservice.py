"""Events from TicketBottle's EventService: a join for an event nobody configured here.

The old service asked the event service on every join. Here a join for an unknown event asks
once (``EventDirectory.ensure``), configures the event from the answer, and goes on; every
later join of that event finds it configured and asks nobody. Per API process:

- one question in flight per event: a burst of joins for a new event waits for that one;
- answers are kept ``cache_seconds`` ("not allowed" too), so refused joins ask nobody either;
- the service down or slow: the question ends at ``timeout_seconds``, the joins get
  UNAVAILABLE, and the next question waits a backoff that grows with each failure; configured
  events are untouched, they never ask;
- every ``refresh_seconds`` the events configured from the service are asked again (one
  process per event per interval, through a Redis key) and a cancellation, a withdrawn wait
  room or a moved sale end is applied (``event_sync.lua``), unless an operator set the state.

An event configured here starts with the waitroom's cap and rate
(``WAITROOM_EVENT_SERVICE_MAX_CONCURRENT`` / ``_RATE``), paused before the sale starts, open
during it and closed from its end.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from grpc import aio
from redis.asyncio import Redis

from shared import keys
from shared.audit import Actor
from shared.backoff import Outage, bug, compute_backoff, is_transient, pause
from shared.errors import Code, Refused, WaitroomError
from shared.events import EventConfig, EventState, EventStore
from shared.proto import event_pb2, event_pb2_grpc
from shared.scripts import Scripts
from shared.settings import EventServiceSettings
from shared.timefmt import format_ms, parse_timestamp

log = logging.getLogger(__name__)

SOURCE = "event-service"
CANCELLED = event_pb2.EVENT_STATUS_CANCELLED
_STATUS_NAMES = {int(number): name for name, number in event_pb2.EventStatus.items()}


class EventServiceDown(Exception):
    """The event service could not answer in time; the join gets UNAVAILABLE."""


def date_ms(text: str) -> int:
    """A sale date in ms; 0 when empty or unreadable (no bound rather than a wrong one)."""
    if not text.strip():
        return 0
    try:
        return int(parse_timestamp(text).timestamp() * 1000)
    except ValueError:
        log.warning("event service sent an unreadable date %r; ignoring it", text[:80])
        return 0


@dataclass(frozen=True)
class RemoteEvent:
    """What the event service says of one event."""

    event_id: str
    allowed: bool
    status: int
    start_ms: int
    end_ms: int

    @property
    def cancelled(self) -> bool:
        return self.status == CANCELLED

    def fields(self, now_ms: int) -> dict[str, str]:
        """How the answer is recorded in the event's config hash."""
        return {
            "source": SOURCE,
            # The sale start: where the scheduled-opening work's `opens_at` will be set from.
            "sale_start_ms": str(self.start_ms),
            "sale_end_ms": str(self.end_ms),
            "remote_allowed": "1" if self.allowed else "0",
            "remote_status": _STATUS_NAMES.get(self.status, str(self.status)),
            "synced_ms": str(now_ms),
        }

    @classmethod
    def from_fields(cls, event_id: str, f: Mapping[str, str]) -> RemoteEvent:
        number = dict(event_pb2.EventStatus.items()).get(f.get("remote_status", ""), 0)
        return cls(
            event_id,
            f.get("remote_allowed") == "1",
            number,
            int(f.get("sale_start_ms") or 0),
            int(f.get("sale_end_ms") or 0),
        )


def desired_state(remote: RemoteEvent, now_ms: int) -> EventState:
    """The state the service's answer implies now (a pure decision, tested on its own)."""
    if not remote.allowed or remote.cancelled or (remote.end_ms and now_ms >= remote.end_ms):
        return EventState.CLOSED
    # Before the sale starts the event is open all the same: its opening is scheduled at the
    # sale's start (``opening``), so joins wait in the pre-queue and get places by the draw.
    return EventState.OPEN


def opening(remote: RemoteEvent, now_ms: int) -> int | None:
    """The scheduled opening the answer implies: the sale's start while it is still ahead;
    None when there is nothing to schedule (no start date, or it has passed)."""
    return remote.start_ms if remote.start_ms > now_ms else None


def refusal(remote: RemoteEvent, now_ms: int) -> WaitroomError | None:
    """Why a join for this event, not configured yet, is refused; None: configure it."""
    event_id = remote.event_id
    if not remote.allowed:
        return WaitroomError(Code.EVENT_CLOSED, f"waiting room not allowed for event {event_id!r}")
    if remote.cancelled:
        return WaitroomError(Code.EVENT_CLOSED, f"event {event_id!r} is cancelled")
    if remote.end_ms and now_ms >= remote.end_ms:
        ended = format_ms(remote.end_ms)
        return WaitroomError(Code.EVENT_CLOSED, f"the sale of event {event_id!r} ended {ended}")
    return None


class EventServiceClient:
    """The two calls, with a deadline; NOT_FOUND is an answer, anything else an outage."""

    def __init__(self, addr: str, timeout_seconds: float) -> None:
        self.addr = addr
        self.timeout = timeout_seconds
        self.channel = aio.insecure_channel(addr)
        self.stub = event_pb2_grpc.EventServiceStub(self.channel)
        self.calls = 0

    async def fetch(self, event_id: str, user_id: str = "") -> RemoteEvent:
        """Ask GetConfig and FindOne at once.

        Raises:
            WaitroomError: WTR006 / WTR008 when the service does not know the event.
            EventServiceDown: no answer within the deadline, or any other failure.
        """
        self.calls += 1
        config_call = self.stub.GetConfig(
            event_pb2.GetEventConfigRequest(event_id=event_id, user_id=user_id),
            timeout=self.timeout,
        )
        event_call = self.stub.FindOne(
            event_pb2.FindOneEventRequest(id=event_id), timeout=self.timeout
        )
        config_reply, event_reply = await asyncio.gather(
            config_call, event_call, return_exceptions=True
        )
        if _not_found(event_reply):
            raise WaitroomError(Code.EVENT_NOT_FOUND, f"event {event_id!r} not found")
        if _not_found(config_reply):
            raise WaitroomError(Code.EVENT_CONFIG_NOT_FOUND, f"event {event_id!r} has no config")
        for reply in (config_reply, event_reply):
            if isinstance(reply, BaseException):
                raise EventServiceDown(_describe(reply))
        assert isinstance(config_reply, event_pb2.GetEventConfigResponse)
        assert isinstance(event_reply, event_pb2.FindOneEventResponse)
        config = config_reply.event_config
        return RemoteEvent(
            event_id,
            config.allow_wait_room,
            int(event_reply.event.status),
            date_ms(config.ticket_sale_start_date),
            date_ms(config.ticket_sale_end_date),
        )

    async def close(self) -> None:
        await self.channel.close()


def _not_found(reply: object) -> bool:
    return isinstance(reply, aio.AioRpcError) and reply.code() is grpc.StatusCode.NOT_FOUND


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return repr(exc)


#: The outcome of one question, shared by every join that waited for it: a fresh exception is
#: raised in each (one exception raised in 100,000 coroutines would grow its traceback each time).
_Outcome = tuple[str, Code | None, str]
_OK: _Outcome = ("ok", None, "")


class EventDirectory:
    """Makes sure a joined event is configured, asking the event service when it is not."""

    def __init__(
        self,
        redis: Redis,
        scripts: Scripts,
        client: EventServiceClient,
        settings: EventServiceSettings,
    ) -> None:
        self.redis = redis
        self.scripts = scripts
        self.client = client
        self.settings = settings
        self.outage = Outage("event service", log, dependency="event_service")
        self._known: dict[str, float] = {}  # event id -> when it was last seen configured
        self._inflight: dict[str, asyncio.Future[_Outcome]] = {}
        self._answers: dict[str, tuple[float, _Outcome]] = {}  # refusals and outages, until
        self._retry_at = 0.0  # monotonic time before which nobody asks the service
        self._last_failure = ""
        self._owner = f"api-{uuid.uuid4().hex[:12]}"
        self.configured = 0
        self.refreshed = 0

    async def ensure(self, event_id: str, user_id: str) -> None:
        """Return once ``event_id`` is configured; raise what a join should fail with.

        Raises:
            WaitroomError: the service refuses the event (WTR009) or does not know it.
            EventServiceDown: it could not be asked (UNAVAILABLE).
        """
        seen = self._known.get(event_id)
        if seen is not None and time.monotonic() - seen < self.settings.refresh_seconds:
            return
        future = self._inflight.get(event_id)
        if future is None:
            future = asyncio.ensure_future(self._resolve(event_id, user_id))
            self._inflight[event_id] = future
            future.add_done_callback(lambda _: self._inflight.pop(event_id, None))
        kind, code, text = await asyncio.shield(future)
        if kind == "refused" and code is not None:
            raise WaitroomError(code, text)
        if kind == "down":
            raise EventServiceDown(text)

    async def _resolve(self, event_id: str, user_id: str) -> _Outcome:
        if await self.redis.exists(keys.config(event_id)):
            self._known[event_id] = time.monotonic()
            return _OK
        cached = self._answers.get(event_id)
        if cached is not None and time.monotonic() < cached[0]:
            return cached[1]
        if time.monotonic() < self._retry_at:
            # Down a moment ago for another event: no question for any event until the backoff.
            return self._down(event_id, self._last_failure)
        try:
            remote = await self.client.fetch(event_id, user_id)
        except WaitroomError as exc:
            return self._remember(event_id, ("refused", exc.code, exc.text))
        except EventServiceDown as exc:
            self.outage.failed(exc)
            # At least a second, doubling per failure in a row up to 30 s, with jitter.
            delay = max(1.0, compute_backoff(self.outage.attempts - 1, base=1.0, cap=30.0))
            self._retry_at = time.monotonic() + delay
            self._last_failure = str(exc)
            return self._down(event_id, self._last_failure)
        self.outage.recovered()
        self._retry_at = 0.0
        now_ms = int(time.time() * 1000)
        refused = refusal(remote, now_ms)
        if refused is not None:
            return self._remember(event_id, ("refused", refused.code, refused.text))
        await self._configure(remote, now_ms)
        self._answers.pop(event_id, None)
        self._known[event_id] = time.monotonic()
        return _OK

    def _down(self, event_id: str, why: str) -> _Outcome:
        text = (
            f"event {event_id!r} is not configured here and the event service "
            f"({self.client.addr}) cannot be asked now ({why}); try again shortly"
        )
        return ("down", None, text)

    def _remember(self, event_id: str, outcome: _Outcome) -> _Outcome:
        self._answers[event_id] = (time.monotonic() + self.settings.cache_seconds, outcome)
        return outcome

    async def _configure(self, remote: RemoteEvent, now_ms: int) -> None:
        """Create the event from the answer; another process doing the same first is fine."""
        config = EventConfig(
            remote.event_id,
            state=desired_state(remote, now_ms),
            max_concurrent=self.settings.max_concurrent,
            rate=self.settings.rate,
        ).validate()
        try:
            fields = {**config.to_fields(), **remote.fields(now_ms)}
            actor = Actor.program("create from the event service")
            await self.scripts.save_event(remote.event_id, "create", fields, actor)
            self.configured += 1
            opens = opening(remote, now_ms)
            if opens is not None:
                await EventStore(self.redis, self.scripts).schedule(remote.event_id, opens)
            log.info("event %s configured from the event service: %s", remote.event_id, config)
        except Refused:
            pass  # created meanwhile, by an operator or another API process
        await self.redis.sadd(keys.EVENTS, remote.event_id)

    # --- refreshing events configured from the service -------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        """Refresh until ``stopping``; waking early for a sale's start or end."""
        while not stopping.is_set():
            wake = self.settings.refresh_seconds
            try:
                wake = min(wake, await self.refresh_all())
            except Exception as exc:
                if not is_transient(exc):
                    bug(log, "event service refresh", exc)
            await pause(stopping, max(0.05, wake))

    async def refresh_all(self) -> float:
        """One pass over every event; returns seconds until the next sale start or end."""
        now_ms = int(time.time() * 1000)
        upcoming = []
        for raw_id in await self.redis.smembers(keys.EVENTS):
            event_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            raw = await self.redis.hgetall(keys.config(event_id))
            f = {_text(k): _text(v) for k, v in raw.items()}
            if f.get("source") != SOURCE:
                continue
            remote = RemoteEvent.from_fields(event_id, f)
            if await self._take_turn(event_id):
                remote = await self._ask_again(remote) or remote
            await self.sync(remote, now_ms)
            upcoming += [t - now_ms for t in (remote.start_ms, remote.end_ms) if t > now_ms]
        return min(upcoming, default=self.settings.refresh_seconds * 1000) / 1000

    async def _take_turn(self, event_id: str) -> bool:
        ttl_ms = max(1, int(self.settings.refresh_seconds * 1000))
        key = keys.event_service_refresh(event_id)
        return await self.scripts.acquire_lock(key, self._owner, ttl_ms)

    async def _ask_again(self, remote: RemoteEvent) -> RemoteEvent | None:
        """The service's answer now; None when it cannot say (the event stays as it is)."""
        try:
            fresh = await self.client.fetch(remote.event_id)
        except WaitroomError:
            # The service no longer knows the event: treat it as withdrawn.
            return RemoteEvent(remote.event_id, False, remote.status, remote.start_ms, 0)
        except EventServiceDown as exc:
            self.outage.failed(exc)
            return None
        self.outage.recovered()
        self.refreshed += 1
        return fresh

    async def sync(self, remote: RemoteEvent, now_ms: int) -> bool:
        """Record the answer and apply the state it implies; True when the state changed."""
        state = desired_state(remote, now_ms)
        changed = await self.scripts.sync_event(remote.event_id, state.value, remote.fields(now_ms))
        await self._follow_opening(remote, now_ms)
        if changed:
            log.info("event %s is now %s (event service)", remote.event_id, state.value)
        return changed

    async def _follow_opening(self, remote: RemoteEvent, now_ms: int) -> None:
        """Move the opening when the sale's start moved, while it is ahead and nobody set it
        by hand; once the pre-queue holds anyone the draw's rules decide (``Refused``)."""
        opens = opening(remote, now_ms)
        raw = await self.redis.hmget(keys.config(remote.event_id), "opens_ms", "operator_set")
        current = int(_text(raw[0] or b"0") or 0)
        operator_set = _text(raw[1] or b"").split(",")
        if opens is None or opens == current or "opens_ms" in operator_set:
            return
        try:
            await EventStore(self.redis, self.scripts).schedule(remote.event_id, opens)
            log.info("event %s opens at %s (event service)", remote.event_id, format_ms(opens))
        except Refused as exc:
            log.info("event %s keeps its opening: %s", remote.event_id, exc)

    async def close(self) -> None:
        await self.client.close()

    def __repr__(self) -> str:
        return (
            f"EventDirectory({self.client.addr}, calls={self.client.calls}, "
            f"configured={self.configured}, refreshed={self.refreshed}, {self.outage!r})"
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
