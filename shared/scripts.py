"""The Lua scripts, registered once per client and wrapped in typed functions.

Every multi-step change to an event happens inside one of these scripts, so it is atomic: a
process killed between two lines of Python can never leave half a change behind.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from shared import keys
from shared.errors import Code, Refused, WaitroomError
from shared.ids import event_suffix, new_nonce, ticket_of_session
from shared.sessions import SessionRecord, Status

_EVENT_SCRIPTS = (
    "join",
    "status",
    "queue_view",
    "leave",
    "admit",
    "finish",
    "purge",
    "event_save",
)
_LOCK_SCRIPTS = ("lock_renew", "lock_release")


@cache
def source(name: str) -> str:
    """The script's text as sent to Redis; event scripts get the shared prelude."""
    text = resources.files("shared").joinpath("lua", f"{name}.lua").read_text("utf-8")
    if name not in _EVENT_SCRIPTS:
        return text
    prelude = resources.files("shared").joinpath("lua", "event_lib.lua").read_text("utf-8")
    if text.startswith("#!"):
        shebang, _, body = text.partition("\n")
        return f"{shebang}\n{prelude}\n{body}"
    return f"{prelude}\n{text}"


def event_keys(event_id: str) -> list[str]:
    """KEYS for an event script, in the order event_lib.lua expects."""
    return [
        keys.config(event_id),
        keys.seq(event_id),
        keys.head(event_id),
        keys.holes(event_id),
        keys.sessions(event_id),
        keys.users(event_id),
        keys.checkout(event_id),
        keys.bucket(event_id),
        keys.outbox(event_id),
        keys.done(event_id),
    ]


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


#: The contract errors a script answers with ``{'ERR', code}``.
_CONTRACT_ERRORS = {
    "WTR001": (Code.SESSION_NOT_FOUND, "session not found"),
    "WTR005": (Code.QUEUE_FULL, "the queue for this event is full"),
    "WTR006": (Code.EVENT_NOT_FOUND, "event not found"),
    "WTR008": (Code.EVENT_CONFIG_NOT_FOUND, "event config not found"),
    "WTR009": (Code.EVENT_CLOSED, "the waiting room for this event is closed"),
}


def _error(code: str) -> WaitroomError:
    kind, text = _CONTRACT_ERRORS[code]
    return WaitroomError(kind, text)


def _packed(items: Sequence[str]) -> tuple[bytes, str]:
    """A list as two script arguments: the items' UTF-8 concatenated, and their byte lengths
    (``unpack_list`` in finish.lua); raises UnicodeEncodeError as redis-py would."""
    encoded = [item.encode("utf-8") for item in items]
    return b"".join(encoded), " ".join(str(len(item)) for item in encoded)


class LeaveOutcome(enum.StrEnum):
    """What ``leave`` did."""

    LEFT = "LEFT"  # the session left now (from the queue or from checkout)
    EXPIRED = "EXPIRED"  # its queue lifetime had run out; it is closed as EXPIRED now
    ALREADY = "ALREADY"  # it had already ended; nothing changed


class FinishOutcome(enum.StrEnum):
    """What ``finish`` did with a checkout outcome."""

    DONE = "DONE"  # the slot was freed and the session closed now
    ALREADY = "ALREADY"  # the session had already ended; nothing changed
    NOT_ADMITTED = "NOT_ADMITTED"  # the session is still queued; nothing changed
    UNKNOWN = "UNKNOWN"  # no such session (never ours, or purged)


@dataclass(frozen=True)
class JoinResult:
    session_id: str
    position: int
    queue_length: int
    queued_ms: int
    expires_ms: int
    status: int
    created: bool


def _join_result(reply: Any) -> JoinResult | WaitroomError:
    if _text(reply[0]) == "ERR":
        return _error(_text(reply[1]))
    return JoinResult(
        session_id=_text(reply[1]),
        position=int(reply[2]),
        queue_length=int(reply[3]),
        queued_ms=int(reply[4]),
        expires_ms=int(reply[5]),
        status=int(reply[6]),
        created=bool(int(reply[7])),
    )


@dataclass(frozen=True)
class SessionView:
    """One session as read by ``status``: its record (None if unknown) and 0-based rank."""

    session_id: str
    record: SessionRecord | None
    rank: int


@dataclass(frozen=True)
class StatusResult:
    queue_length: int
    in_checkout: int
    now_ms: int
    sessions: list[SessionView]


@dataclass(frozen=True)
class QueueView:
    """The shape of one event's queue at one instant (``queue_view``).

    ``holes`` are the tickets at or past ``head`` that left while waiting, ascending.
    """

    head: int
    seq: int
    queue_length: int
    in_checkout: int
    now_ms: int
    holes: list[int]


@dataclass(frozen=True)
class AdmitResult:
    admitted: int
    expired: int
    reclaimed: int
    queue_length: int
    in_checkout: int
    retry_ms: int
    next_lease_ms: int
    waits_ms: list[int]


class Scripts:
    """The scripts registered on one client; each method is one atomic round trip."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(source(name)) for name in _EVENT_SCRIPTS + _LOCK_SCRIPTS
        }

    @staticmethod
    def _argv(event_id: str, *args: bytes | str | int | float) -> list[bytes | str | int | float]:
        """ARGV for an event script: the prelude's three values, then the script's own."""
        return [event_id, keys.NOTIFY_CHANNEL, event_suffix(event_id), *args]

    async def _event(self, name: str, event_id: str, *args: str | int | float) -> Any:
        argv = self._argv(event_id, *args)
        return await self._scripts[name](keys=event_keys(event_id), args=argv)

    async def join(self, event_id: str, user_id: str, nonce: str | None = None) -> JoinResult:
        """Join ``user_id`` to the queue, or return their live session.

        ``nonce`` is the random part of a new session id (drawn here unless given).
        """
        reply = await self._event("join", event_id, user_id, nonce or new_nonce())
        result = _join_result(reply)
        if isinstance(result, WaitroomError):
            raise result
        return result

    async def join_many(
        self, event_id: str, user_ids: Sequence[str]
    ) -> list[JoinResult | WaitroomError]:
        """``join`` for many users of one event in one round trip (bulk loads: benchmarks,
        rehearsals).

        The scripts run in the given order (a pipeline, not a transaction: each is atomic on
        its own). Each result is the join or the refusal (WTR005, WTR006, WTR009) it met.
        """
        if not user_ids:
            return []
        script = self._scripts["join"]
        event = event_keys(event_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                argv = self._argv(event_id, user_id, new_nonce())
                await script(keys=event, args=argv, client=pipe)
            replies = await pipe.execute()
        return [_join_result(r) for r in replies]

    async def status(self, event_id: str, session_ids: list[str]) -> StatusResult:
        reply = await self._event("status", event_id, *session_ids)
        views = []
        for i, sid in enumerate(session_ids):
            raw = reply[3 + 2 * i]
            record = SessionRecord.decode(raw, ticket_of_session(sid)) if raw else None
            views.append(SessionView(sid, record, int(reply[4 + 2 * i])))
        return StatusResult(int(reply[0]), int(reply[1]), int(reply[2]), views)

    async def queue_view(self, event_id: str) -> QueueView:
        """Head, seq and holes of the queue: enough to place any waiting ticket without its
        record (``QueueView``)."""
        reply = await self._event("queue_view", event_id)
        v = [int(x) for x in reply]
        return QueueView(v[0], v[1], v[2], v[3], v[4], holes=v[5:])

    async def leave(self, event_id: str, session_id: str) -> tuple[LeaveOutcome, Status]:
        """What leaving did, and the status the session had before (``LEFT``) or has now."""
        reply = await self._event("leave", event_id, session_id)
        if _text(reply[0]) == "ERR":
            raise _error(_text(reply[1]))
        return LeaveOutcome(_text(reply[0])), Status(int(reply[1]))

    async def admit(self, event_id: str, limit: int) -> AdmitResult | None:
        """One admission step; None when the event has no configuration."""
        reply = await self._event("admit", event_id, limit)
        if _text(reply[0]) == "NOEVENT":
            return None
        v = [int(x) for x in reply]
        return AdmitResult(v[0], v[1], v[2], v[3], v[4], v[5], v[6], waits_ms=v[7:])

    async def finish(
        self, event_id: str, session_id: str, status: int, reason: str
    ) -> FinishOutcome:
        """Record a checkout outcome (``status`` COMPLETED, FAILED or EXPIRED)."""
        (result,) = await self.finish_many([(event_id, session_id, status, reason)])
        if isinstance(result, ResponseError):
            raise result
        assert result is not None  # the only outcome sent cannot be behind another
        return result

    async def finish_many(
        self, outcomes: Sequence[tuple[str, str, int, str]]
    ) -> list[FinishOutcome | ResponseError | None]:
        """``finish`` for many ``(event_id, session_id, status, reason)`` in one round trip.

        One script call per event takes all of that event's outcomes in the given order (a
        pipeline of those calls, not a transaction: each call is atomic on its own). Each result
        is what ``finish`` returns for that outcome, the error it met, or None when an earlier
        outcome of its event met an error, so it was not run: run it again after that one, to
        keep their order. A connection error raises for the whole call, and retrying it is safe
        because ``finish`` is idempotent.
        """
        if not outcomes:
            return []
        by_event: dict[str, list[int]] = {}
        for i, (event_id, *_) in enumerate(outcomes):
            by_event.setdefault(event_id, []).append(i)
        script = self._scripts["finish"]
        async with self.redis.pipeline(transaction=False) as pipe:
            for event_id, indexes in by_event.items():
                sids = _packed([outcomes[i][1] for i in indexes])
                statuses = _packed([str(int(outcomes[i][2])) for i in indexes])
                reasons = _packed([outcomes[i][3] for i in indexes])
                argv = self._argv(event_id, *sids, *statuses, *reasons)
                await script(keys=event_keys(event_id), args=argv, client=pipe)
            replies = await pipe.execute(raise_on_error=False)
        results: list[FinishOutcome | ResponseError | None] = [None] * len(outcomes)
        for indexes, reply in zip(by_event.values(), replies, strict=True):
            if isinstance(reply, ResponseError):  # the call itself failed: the first one failed
                results[indexes[0]] = reply
                continue
            for i, one in zip(indexes, reply, strict=False):
                word = _text(one[0])
                error = word == "ERROR"
                results[i] = ResponseError(_text(one[1])) if error else FinishOutcome(word)
        return results

    async def purge(self, event_id: str, retention_ms: int, limit: int) -> int:
        return int(await self._event("purge", event_id, retention_ms, limit))

    async def save_event(self, event_id: str, mode: str, fields: dict[str, str]) -> None:
        """Create (``mode`` "create") or change ("update") an event's configuration.

        Raises ``Refused`` when creating an event that exists, WTR008 when updating one that
        does not.
        """
        pairs = [item for pair in fields.items() for item in pair]
        reply = await self._event("event_save", event_id, mode, *pairs)
        if _text(reply[0]) != "ERR":
            return
        if _text(reply[1]) == "EXISTS":
            raise Refused(f"event {event_id!r} exists; use `waitroom event update` to change it")
        raise _error(_text(reply[1]))

    async def acquire_lock(self, key: str, token: str, ttl_ms: int) -> bool:
        """Take a lock nobody holds (``SET NX PX``); renewing and releasing check ``token``."""
        return bool(await self.redis.set(key, token, nx=True, px=ttl_ms))

    async def renew_lock(self, key: str, token: str, ttl_ms: int) -> bool:
        return bool(await self._scripts["lock_renew"](keys=[key], args=[token, ttl_ms]))

    async def release_lock(self, key: str, token: str) -> bool:
        return bool(await self._scripts["lock_release"](keys=[key], args=[token]))
