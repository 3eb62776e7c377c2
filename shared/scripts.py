"""The Lua scripts, registered once per client and wrapped in typed functions.

Every multi-step change to an event happens inside one of these scripts, so it is atomic: a
process killed between two lines of Python can never leave half a change behind.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.crc import key_slot
from redis.exceptions import NoScriptError, ResponseError

from shared import keys
from shared.audit import Actor
from shared.errors import Code, Refused, WaitroomError
from shared.ids import event_suffix, new_nonce, ticket_of_session
from shared.redis_config import Durability
from shared.redis_modes import durability_of, is_cluster, pinned
from shared.sessions import SessionRecord, Status

_EVENT_SCRIPTS = (
    "join",
    "join_batch",
    "status",
    "queue_view",
    "leave",
    "admit",
    "finish",
    "purge",
    "event_save",
    "event_sync",
    "event_delete",
    *("restore_probe", "restore_begin", "restore_sessions", "restore_holes", "restore_done"),
    "presence",
    "draw_schedule",
    "draw_begin",
    "draw_write",
    "draw_finish",
)
_LOCK_SCRIPTS = ("lock_renew", "lock_release", "lock_renew_many")
#: Most locks one ``lock_renew_many`` call renews: 1,000 keep a call well under a millisecond.
RENEW_CHUNK = 1000


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
        keys.draw(event_id),
        keys.draw_order(event_id),
        keys.draw_rank(event_id),
        keys.draw_left(event_id),
        keys.presence(event_id),
        keys.ip_live(event_id),
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
    "WTR010": (Code.TOO_MANY_REQUESTS, "too many requests"),
    "WTR011": (Code.RECOVERING, "the waiting room is recovering its state; retry shortly"),
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
    opens_ms: int = 0  # the scheduled opening; 0: none
    rate: float = 0.0  # admissions per second to estimate waits with


class RateLimited(WaitroomError):
    """WTR010: a per-address join limit refused the join; ``limit`` says which one."""

    def __init__(self, limit: str) -> None:
        super().__init__(Code.TOO_MANY_REQUESTS, "too many requests")
        self.limit = limit


def _join_result(reply: Any) -> JoinResult | WaitroomError:
    if _text(reply[0]) == "ERR":
        if _text(reply[1]) == "WTR010":
            return RateLimited(_text(reply[2]))
        return _error(_text(reply[1]))
    return JoinResult(
        session_id=_text(reply[1]),
        position=int(reply[2]),
        queue_length=int(reply[3]),
        queued_ms=int(reply[4]),
        expires_ms=int(reply[5]),
        status=int(reply[6]),
        created=bool(int(reply[7])),
        opens_ms=int(reply[8]),
        rate=float(reply[9]),
    )


@dataclass(frozen=True)
class SessionView:
    """One session as read by ``status``: its record (None if unknown) and 0-based rank.

    ``place`` is its place in the queue (0: not waiting, or not drawn yet); ``touch_due`` says
    its presence should be recorded now (``Scripts.touch``).
    """

    session_id: str
    record: SessionRecord | None
    rank: int
    place: int = 0
    touch_due: bool = False


@dataclass(frozen=True)
class StatusResult:
    queue_length: int
    in_checkout: int
    now_ms: int
    sessions: list[SessionView]
    opens_ms: int = 0  # the scheduled opening; 0: none
    rate: float = 0.0  # admissions per second to estimate waits with
    drawing: bool = False  # a scheduled draw is not done yet


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
    opens_ms: int = 0
    rate: float = 0.0
    drawing: bool = False  # positions of pre-queue sessions are not known yet
    idle_ms: int = 0  # the event's idle timeout; 0: off


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
    abandoned: int = 0  # dropped as absent for longer than the idle timeout
    draw_due: bool = False  # the opening has passed and the draw is not done


@dataclass(frozen=True)
class DeleteResult:
    """What ``event_delete`` found: whether it deleted, and what the event still held."""

    deleted: bool
    waiting: int
    in_checkout: int
    outbox: int


class Scripts:
    """The scripts registered on one client; each method is one atomic round trip."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(source(name)) for name in _EVENT_SCRIPTS + _LOCK_SCRIPTS
        }

    @staticmethod
    def _argv(event_id: str, *args: str | int | float | bytes) -> list[str | int | float | bytes]:
        """ARGV for an event script: the prelude's three values, then the script's own."""
        return [event_id, keys.NOTIFY_CHANNEL, event_suffix(event_id), *args]

    async def _event(self, name: str, event_id: str, *args: str | int | float | bytes) -> Any:
        argv = self._argv(event_id, *args)
        return await self._scripts[name](keys=event_keys(event_id), args=argv)

    async def _durable(
        self,
        name: str,
        event_id: str,
        *args: str | int | float,
        extra_keys: Sequence[str] = (),
    ) -> Any:
        """``_event`` for a script whose change someone is told about (a user, Kafka): with
        ``WAITROOM_REDIS_WAIT_REPLICAS`` set, it returns only once that many replicas hold the
        change (``WAIT`` on the script's connection), else raises ``NotReplicated``.
        ``extra_keys`` are the script's own keys after the event keys (same hash tag)."""
        script_keys = [*event_keys(event_id), *extra_keys]
        argv = self._argv(event_id, *args)
        durability = durability_of(self.redis)
        if not durability.on:
            return await self._scripts[name](keys=script_keys, args=argv)
        (reply,) = await self._pipelined(name, [(script_keys, argv)])
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def _pipelined(
        self,
        name: str,
        calls: Sequence[tuple[list[str], list[str | int | float | bytes]]],
        *,
        replicated: bool = True,
    ) -> list[Any]:
        """Script ``name`` for each ``(keys, argv)``, pipelined per server, each event's calls
        in the given order; replies (or errors) in call order. In a cluster each call goes to
        its event's shard (its first key's); the durability wait, when on, ends each server's
        pipeline (not with ``replicated`` False: nobody is told about the change)."""
        script = self._scripts[name]
        per_call_keys = [call_keys for call_keys, _ in calls]
        firsts = [k[0] for k in per_call_keys]
        durability = durability_of(self.redis) if replicated else Durability()

        def queue_for(indexes: list[int]) -> Callable[[Any, int], Awaitable[None]]:
            async def queue(pipe: Any, j: int) -> None:
                i = indexes[j]
                pipe.evalsha(script.sha, len(per_call_keys[i]), *per_call_keys[i], *calls[i][1])

            return queue

        # EVALSHA straight into the pipeline rather than through the script object: redis-py
        # would then check the script cache (SCRIPT EXISTS) before every pipeline, a second
        # round trip per durable join. A server that lacks the script (restarted, promoted)
        # answers NOSCRIPT without running anything, so those calls are sent again after a load.
        everything = list(range(len(calls)))
        replies = await pinned(self.redis, firsts, queue_for(everything), durability)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            await self.redis.script_load(script.script)  # in a cluster: on every master
            again = await pinned(
                self.redis, [firsts[i] for i in missing], queue_for(missing), durability
            )
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def join(
        self, event_id: str, user_id: str, nonce: str | None = None, ip_address: str = ""
    ) -> JoinResult:
        """Join ``user_id`` to the queue, or return their live session.

        ``nonce`` is the random part of a new session id (drawn here unless given);
        ``ip_address`` (canonical form, "" when unknown) is what per-address limits count.
        """
        reply = await self._durable(
            "join",
            event_id,
            user_id,
            nonce or new_nonce(),
            ip_address,
            extra_keys=[keys.ip_joins(event_id, ip_address)],
        )
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
        join_keys = [*event_keys(event_id), keys.ip_joins(event_id, "")]
        calls = [(join_keys, self._argv(event_id, u, new_nonce(), "")) for u in user_ids]
        replies = await self._pipelined("join", calls)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return [_join_result(r) for r in replies]

    async def status(self, event_id: str, session_ids: list[str]) -> StatusResult:
        """The sessions with their places; WTR011 while the event is being checked against
        Kafka or rebuilt from it (what Redis holds may be behind what users were told)."""
        reply = await self._event("status", event_id, *session_ids)
        if _text(reply[0]) == "ERR":
            raise _error(_text(reply[1]))
        views = []
        for i, sid in enumerate(session_ids):
            at = 6 + 4 * i
            raw = reply[at]
            record = SessionRecord.decode(raw, ticket_of_session(sid)) if raw else None
            rank, place, touch = int(reply[at + 1]), int(reply[at + 2]), bool(int(reply[at + 3]))
            views.append(SessionView(sid, record, rank, place, touch))
        return StatusResult(
            int(reply[0]),
            int(reply[1]),
            int(reply[2]),
            views,
            opens_ms=int(reply[3]),
            rate=float(reply[4]),
            drawing=bool(int(reply[5])),
        )

    async def queue_view(self, event_id: str) -> QueueView:
        """Head, seq and holes of the queue: enough to place any waiting ticket without its
        record (``QueueView``)."""
        reply = await self._event("queue_view", event_id)
        v = [int(x) for i, x in enumerate(reply) if i != 6]
        return QueueView(
            v[0],
            v[1],
            v[2],
            v[3],
            v[4],
            holes=v[8:],
            opens_ms=v[5],
            rate=float(reply[6]),
            drawing=bool(v[6]),
            idle_ms=v[7],
        )

    async def leave(self, event_id: str, session_id: str) -> tuple[LeaveOutcome, Status]:
        """What leaving did, and the status the session had before (``LEFT``) or has now."""
        reply = await self._durable("leave", event_id, session_id)
        if _text(reply[0]) == "ERR":
            raise _error(_text(reply[1]))
        return LeaveOutcome(_text(reply[0])), Status(int(reply[1]))

    async def admit(self, event_id: str, limit: int) -> AdmitResult | None:
        """One admission step; None when the event has no configuration."""
        reply = await self._durable("admit", event_id, limit)
        if _text(reply[0]) == "NOEVENT":
            return None
        v = [int(x) for x in reply]
        return AdmitResult(
            v[0],
            v[1],
            v[2],
            v[3],
            v[4],
            v[5],
            v[6],
            waits_ms=v[9:],
            abandoned=v[7],
            draw_due=bool(v[8]),
        )

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
        calls = []
        for event_id, indexes in by_event.items():
            sids = _packed([outcomes[i][1] for i in indexes])
            statuses = _packed([str(int(outcomes[i][2])) for i in indexes])
            reasons = _packed([outcomes[i][3] for i in indexes])
            calls.append((event_keys(event_id), self._argv(event_id, *sids, *statuses, *reasons)))
        # Through _pipelined: one call per event, routed to its shard in a cluster, and with the
        # durability wait (WAITROOM_REDIS_WAIT_REPLICAS) before the consumer commits.
        replies = await self._pipelined("finish", calls)
        results: list[FinishOutcome | ResponseError | None] = [None] * len(outcomes)
        for indexes, reply in zip(by_event.values(), replies, strict=True):
            if isinstance(reply, Exception) and not isinstance(reply, ResponseError):
                raise reply
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

    async def save_event(
        self,
        event_id: str,
        mode: str,
        fields: dict[str, str],
        audit: Actor,
        *,
        reopen: bool = False,
    ) -> int:
        """Create (``mode`` "create") or change ("update") an event's configuration, and
        record the change in its audit trail and outbox; returns how many fields changed.

        Raises ``Refused`` when creating an event that exists or, without ``reopen``, moving a
        closed event to another state; WTR008 when updating an event that does not exist.
        """
        pairs = [item for pair in fields.items() for item in pair]
        reply = await self._scripts["event_save"](
            keys=[*event_keys(event_id), keys.audit(event_id)],
            args=self._argv(
                event_id,
                mode,
                audit.to_json(),
                audit.retention_ms,
                audit.max_entries,
                "1" if reopen else "0",
                *pairs,
            ),
        )
        if _text(reply[0]) != "ERR":
            return int(reply[1])
        if _text(reply[1]) == "EXISTS":
            raise Refused(f"event {event_id!r} exists; use `waitroom event update` to change it")
        if _text(reply[1]) == "CLOSED":
            raise Refused(
                f"event {event_id!r} is closed; this would let new users join again. "
                "Pass --reopen if that is what you want"
            )
        raise _error(_text(reply[1]))

    async def sync_event(self, event_id: str, state: str, fields: dict[str, str]) -> bool:
        """Record the event service's answer on an event configured from it, and set the
        ``state`` it implies unless an operator set the state; True when the state changed."""
        pairs = [item for pair in fields.items() for item in pair]
        reply = await self._event("event_sync", event_id, state, *pairs)
        return _text(reply[0]) == "OK" and int(reply[1]) == 1

    async def delete_event(self, event_id: str, *, force: bool) -> DeleteResult:
        """Delete every key of an event in one step; refused (``deleted`` False) while users
        wait or hold checkout slots, unless ``force``."""
        reply = await self._scripts["event_delete"](
            keys=[*event_keys(event_id), keys.audit(event_id), keys.lock(event_id)],
            args=self._argv(event_id, "1" if force else "0"),
        )
        if _text(reply[0]) == "ERR":
            raise _error(_text(reply[1]))
        counts = [int(x) for x in reply[1:4]]
        return DeleteResult(_text(reply[0]) == "OK", *counts)

    async def acquire_lock(self, key: str, token: str, ttl_ms: int) -> bool:
        """Take a lock nobody holds (``SET NX PX``); renewing and releasing check ``token``."""
        return bool(await self.redis.set(key, token, nx=True, px=ttl_ms))

    async def renew_lock(self, key: str, token: str, ttl_ms: int) -> bool:
        return bool(await self._scripts["lock_renew"](keys=[key], args=[token, ttl_ms]))

    async def release_lock(self, key: str, token: str) -> bool:
        return bool(await self._scripts["lock_release"](keys=[key], args=[token]))

    async def acquire_locks(self, locks: Sequence[tuple[str, str]], ttl_ms: int) -> list[bool]:
        """``acquire_lock`` for each ``(key, token)``, pipelined per server: whether each was
        taken, in order (False also where Redis answered an error)."""

        async def queue(pipe: Any, i: int) -> None:
            key, token = locks[i]
            pipe.set(key, token, nx=True, px=ttl_ms)

        replies = await pinned(self.redis, [key for key, _ in locks], queue, Durability())
        return [reply is True for reply in replies]

    async def renew_locks(
        self, locks: Sequence[tuple[str, str]], ttl_ms: int
    ) -> list[bool | Exception]:
        """``renew_lock`` for each ``(key, token)`` in a few round trips (``lock_renew_many``
        for up to ``RENEW_CHUNK`` keys of one slot, pipelined per server): whether each is still
        ours, or the error its call met, in order."""
        groups: dict[int, list[int]] = {}
        if is_cluster(self.redis):  # a script's keys must share a slot
            for i, (key, _) in enumerate(locks):
                groups.setdefault(key_slot(key.encode()), []).append(i)
        elif locks:
            groups[0] = list(range(len(locks)))
        parts = [
            indexes[start : start + RENEW_CHUNK]
            for indexes in groups.values()
            for start in range(0, len(indexes), RENEW_CHUNK)
        ]
        calls: list[tuple[list[str], list[str | int | float | bytes]]] = [
            ([locks[i][0] for i in part], [ttl_ms, *_packed([locks[i][1] for i in part])])
            for part in parts
        ]
        replies = await self._pipelined("lock_renew_many", calls, replicated=False)
        out: list[bool | Exception] = [True] * len(locks)
        for part, reply in zip(parts, replies, strict=True):
            if isinstance(reply, Exception):
                for i in part:
                    out[i] = reply
                continue
            for position in reply:
                out[part[int(position) - 1]] = False
        return out

    # --- recovery (shared/recovery, docs/reliability.md) ------------------------------------

    async def restore_probe(self, event_id: str) -> Probe:
        """What recovery compares with Kafka, in one consistent read (read-only)."""
        v = await self._event("restore_probe", event_id)
        config = {_text(v[i]): _text(v[i + 1]) for i in range(9, len(v), 2)}
        return Probe(
            run_id=_text(v[0]),
            generation=_text(v[1]),
            recovery=_text(v[2]),
            seq=int(v[3]),
            head=int(v[4]),
            max_deleted_id=_text(v[5]),
            recovered_through=_text(v[6]),
            outbox_length=int(v[7]),
            config=config,
            last_id=_text(v[8]),
        )

    async def restore_begin(
        self, event_id: str, reason: str, min_seq: int, config: dict[str, str]
    ) -> tuple[bool, int, int]:
        """Mark the event recovering and raise its ticket counter to ``min_seq``; ``config``
        is written only when Redis has none. Returns (config rebuilt, seq before, seq after)."""
        pairs = [item for pair in config.items() for item in pair]
        v = await self._event("restore_begin", event_id, reason, min_seq, *pairs)
        return bool(int(v[0])), int(v[1]), int(v[2])

    async def restore_sessions(
        self, event_id: str, rows: Sequence[tuple[int, str]]
    ) -> tuple[int, int, int, int]:
        """Merge (ticket, record JSON) rows; (written, advanced, kept, conflicts)."""
        args = [item for row in rows for item in row]
        v = await self._event("restore_sessions", event_id, *args)
        return int(v[0]), int(v[1]), int(v[2]), int(v[3])

    async def restore_holes(self, event_id: str, tickets: Sequence[int]) -> tuple[int, int]:
        """Make holes of the tickets nobody waits under; (holes, of which without a session)."""
        v = await self._event("restore_holes", event_id, *tickets)
        return int(v[0]), int(v[1])

    async def restore_done(
        self, event_id: str, min_head: int, recovered_through: str, skipped: str = ""
    ) -> tuple[str, int] | None:
        """Stamp the event verified by this Redis, listing the ``skipped`` ticket range
        ("low-high") a recovery passed over; (run id, head), None without a config."""
        v = await self._event("restore_done", event_id, min_head, recovered_through, skipped)
        if _text(v[0]) == "NOEVENT":
            return None
        return _text(v[0]), int(v[1])


@dataclass(frozen=True)
class Probe:
    """An event's recovery facts (``restore_probe``): the server's run id, the generation the
    event was last checked under, counters, the outbox's highest relayed (deleted) record id
    and highest record id ever, and the config (empty when Redis has none)."""

    run_id: str
    generation: str
    recovery: str
    seq: int
    head: int
    max_deleted_id: str
    recovered_through: str
    outbox_length: int
    config: dict[str, str]
    last_id: str = "0-0"

    @property
    def verified(self) -> bool:
        """Checked against Kafka by this very server, and not being rebuilt."""
        return bool(self.config) and self.generation == self.run_id and not self.recovery


# --- sale-day fairness: presence and the draw (see docs/architecture.md, "The draw") ----------


@dataclass(frozen=True)
class DrawProgress:
    """Where a scheduled draw stands (``draw_begin``).

    ``stage`` is NONE (no opening scheduled), EARLY (before it), DRAW (due: ``written`` of
    ``entrants`` places written, with ``seed``) or DONE.
    """

    stage: str
    entrants: int = 0
    written: int = 0
    seed: str = ""
    opens_ms: int = 0


class DrawScripts:
    """The draw's and presence's scripts on one client (kept apart from ``Scripts`` so the core
    wrapper stays small; it shares its registrations)."""

    def __init__(self, scripts: Scripts) -> None:
        self.scripts = scripts

    async def touch(self, event_id: str, tickets: Sequence[int]) -> int:
        """Record that the queued users holding ``tickets`` are here now; how many were."""
        if not tickets:
            return 0
        return int(await self.scripts._event("presence", event_id, *tickets))

    async def schedule(self, event_id: str, opens_ms: int, seed: str, commitment: str) -> str:
        """Set (``opens_ms`` > 0) or remove (0) the event's opening; the commitment in force.

        Raises WTR008 for an unknown event and ``Refused`` when the opening can no longer
        change (see draw_schedule.lua).
        """
        reply = await self.scripts._event("draw_schedule", event_id, opens_ms, seed, commitment)
        if _text(reply[0]) == "OK":
            return _text(reply[1])
        why = _text(reply[1])
        if why == "WTR008":
            raise _error(why)
        raise Refused(_SCHEDULE_REFUSALS[why].format(event_id=event_id))

    async def begin(self, event_id: str) -> DrawProgress:
        reply = await self.scripts._event("draw_begin", event_id)
        stage = _text(reply[0])
        if stage == "DRAW":
            return DrawProgress(stage, int(reply[1]), int(reply[2]), _text(reply[3]))
        if stage == "DONE":
            return DrawProgress(stage, int(reply[1]), int(reply[1]))
        if stage == "EARLY":
            return DrawProgress(stage, opens_ms=int(reply[1]))
        return DrawProgress(stage)

    async def write(self, event_id: str, first: int, order: bytes, rank: bytes) -> int:
        """Write one chunk (entries ``first``.. of both arrays); the entries written so far."""
        reply = await self.scripts._event("draw_write", event_id, first, order, rank)
        return int(reply[0])

    async def finish(self, event_id: str, limit: int) -> tuple[str, int]:
        """Place up to ``limit`` pre-queue leavers, or complete the draw: (stage, figure)."""
        reply = await self.scripts._event("draw_finish", event_id, limit)
        return _text(reply[0]), int(reply[1])


_SCHEDULE_REFUSALS = {
    "CLOSED": "the opening of {event_id!r} has passed: its pre-queue is closed and drawn",
    "STARTED": "{event_id!r} already has users queued in arrival order; an opening with a draw "
    "can only be set before anyone joins",
    "ENTRANTS": "{event_id!r} has users in its pre-queue; move the opening instead of removing it",
}


# --- coalesced joins (join_batch.lua; used by waitroom_api/coalesce.py) ----------------------

#: The most users one ``join_batch`` call takes; a larger batch is several calls, pipelined in
#: order on one connection (one round trip still). Redis runs nothing else while a script runs,
#: so this bounds the stall a burst of joins puts in front of other events' calls.
JOIN_BATCH_MAX_USERS = 100


@dataclass(frozen=True)
class JoinRequest:
    """One caller's join: ``ip_address`` in canonical form, "" when unknown."""

    user_id: str
    ip_address: str = ""


@dataclass(frozen=True)
class JoinChunk:
    """The requests of one ``join_batch`` call and how its per-address keys are laid out.

    ``addresses`` are the distinct known addresses of ``requests`` in order of first appearance
    (one join counter key each, after the event keys); ``counters[i]`` is the 1-based index of
    request ``i``'s address among them, 0 when its address is unknown.
    """

    requests: tuple[JoinRequest, ...]
    addresses: tuple[str, ...]
    counters: tuple[int, ...]


def plan_join_batch(requests: Sequence[JoinRequest], max_users: int) -> list[JoinChunk]:
    """Cut ``requests`` (in arrival order) into calls of at most ``max_users`` users each."""
    if max_users < 1:
        raise ValueError(f"max_users must be at least 1, not {max_users}")
    chunks = []
    for start in range(0, len(requests), max_users):
        part = tuple(requests[start : start + max_users])
        index: dict[str, int] = {}
        for request in part:
            if request.ip_address and request.ip_address not in index:
                index[request.ip_address] = len(index) + 1
        counters = tuple(index.get(r.ip_address, 0) for r in part)
        chunks.append(JoinChunk(part, tuple(index), counters))
    return chunks


def _batch_result(reply: Any) -> JoinResult | Exception:
    if _text(reply[0]) == "ERR" and _text(reply[1]) == "SCRIPT":
        # What a lone join's script error would have raised, for this user alone.
        return ResponseError(_text(reply[2]))
    return _join_result(reply)


async def join_batch(
    scripts: Scripts, event_id: str, requests: Sequence[JoinRequest]
) -> list[JoinResult | Exception]:
    """``Scripts.join`` for each of ``requests`` (one event), in order, in one round trip.

    Each result is what that user's lone join would have returned, or the error it would
    have raised (``WaitroomError``, ``RateLimited``, a script's ``ResponseError``). A failure
    of the call itself (Redis unreachable, too few replicas acknowledged) raises for all.
    """
    calls: list[tuple[list[str], list[str | int | float | bytes]]] = []
    chunks = plan_join_batch(requests, JOIN_BATCH_MAX_USERS)
    for chunk in chunks:
        call_keys = [
            *event_keys(event_id),
            *(keys.ip_joins(event_id, address) for address in chunk.addresses),
        ]
        values: list[str | int | float | bytes] = []
        for request, counter in zip(chunk.requests, chunk.counters, strict=True):
            values += (request.user_id, new_nonce(), request.ip_address, counter)
        calls.append((call_keys, scripts._argv(event_id, *values)))
    replies: list[Any]
    if len(calls) == 1 and not durability_of(scripts.redis).on:
        # One plain EVALSHA: a pipeline costs more of redis-py's Python for one command.
        try:
            replies = [await scripts._scripts["join_batch"](keys=calls[0][0], args=calls[0][1])]
        except ResponseError as exc:
            replies = [exc]
    else:
        replies = await scripts._pipelined("join_batch", calls)
    results: list[JoinResult | Exception] = []
    for chunk, reply in zip(chunks, replies, strict=True):
        if isinstance(reply, ResponseError):
            results += [reply] * len(chunk.requests)
        elif isinstance(reply, Exception):
            raise reply
        else:
            results += [_batch_result(one) for one in reply]
    return results
