"""Event configuration: whom the admitter admits and how fast (the event's ``config`` hash)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from redis.asyncio import Redis

from shared import draw, keys
from shared.audit import Actor
from shared.errors import Code, WaitroomError
from shared.ids import validate_event_id
from shared.scripts import DeleteResult, DrawScripts, Scripts


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class EventState(enum.Enum):
    OPEN = "open"  # joins accepted, users admitted
    PAUSED = "paused"  # joins accepted, nobody admitted
    CLOSED = "closed"  # joins refused (WTR009); those already waiting are still admitted


@dataclass(frozen=True)
class EventConfig:
    event_id: str
    state: EventState = EventState.OPEN
    max_concurrent: int = 100
    rate: float = 10.0
    checkout_ttl_seconds: float = 15 * 60
    session_ttl_seconds: float = 2 * 60 * 60
    max_queue: int = 0
    created_ms: int = 0
    updated_ms: int = 0
    # Sale-day fairness (docs/architecture.md): all off by default.
    opens_ms: int = 0  # scheduled opening: joins before it wait in the pre-queue for the draw
    idle_timeout_seconds: float = 0  # absent longer than this when reached: dropped, abandoned
    idle_since_ms: int = 0  # when the idle timeout was turned on (everyone counts seen then)
    ip_joins_per_minute: int = 0  # joins per IP address per minute
    ip_live_sessions: int = 0  # live sessions per IP address

    def validate(self) -> EventConfig:
        validate_event_id(self.event_id)
        problems = []
        if self.max_concurrent < 1:
            problems.append("max_concurrent must be at least 1")
        if not 0 < self.rate <= 1_000_000:
            problems.append("rate must be above 0 and at most 1000000 users/s")
        if self.checkout_ttl_seconds < 1:
            problems.append("checkout_ttl must be at least 1 s")
        if self.session_ttl_seconds < 1:
            problems.append("session_ttl must be at least 1 s")
        if self.max_queue < 0:
            problems.append("max_queue must be 0 (unlimited) or more")
        if self.opens_ms < 0:
            problems.append("opens_at must be a time after 1970")
        if self.idle_timeout_seconds != 0 and self.idle_timeout_seconds < 1:
            problems.append("idle_timeout must be 0 (off) or at least 1 s")
        if self.ip_joins_per_minute < 0 or self.ip_live_sessions < 0:
            problems.append("per-address limits must be 0 (off) or more")
        if problems:
            raise WaitroomError(Code.INVALID_INPUT, "; ".join(problems))
        return self

    def to_fields(self) -> dict[str, str]:
        return {
            "state": self.state.value,
            "max_concurrent": str(self.max_concurrent),
            "rate": repr(float(self.rate)),
            "checkout_ttl_ms": str(round(self.checkout_ttl_seconds * 1000)),
            "session_ttl_ms": str(round(self.session_ttl_seconds * 1000)),
            "max_queue": str(self.max_queue),
            # opens_ms is not here: only draw_schedule.lua writes it, with the commitment.
            "idle_timeout_ms": str(round(self.idle_timeout_seconds * 1000)),
            "idle_since_ms": str(self.idle_since_ms),
            "ip_joins_per_minute": str(self.ip_joins_per_minute),
            "ip_live_sessions": str(self.ip_live_sessions),
        }

    @classmethod
    def from_fields(cls, event_id: str, raw: Mapping[bytes | str, bytes | str]) -> EventConfig:
        f = {_text(k): _text(v) for k, v in raw.items()}
        return cls(
            event_id=event_id,
            state=EventState(f["state"]),
            max_concurrent=int(f["max_concurrent"]),
            rate=float(f["rate"]),
            checkout_ttl_seconds=int(f["checkout_ttl_ms"]) / 1000,
            session_ttl_seconds=int(f["session_ttl_ms"]) / 1000,
            max_queue=int(f.get("max_queue", "0")),
            created_ms=int(f.get("created_ms", "0")),
            updated_ms=int(f.get("updated_ms", "0")),
            opens_ms=int(f.get("opens_ms", "0")),
            idle_timeout_seconds=int(f.get("idle_timeout_ms", "0")) / 1000,
            idle_since_ms=int(f.get("idle_since_ms", "0")),
            ip_joins_per_minute=int(f.get("ip_joins_per_minute", "0")),
            ip_live_sessions=int(f.get("ip_live_sessions", "0")),
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data


@dataclass(frozen=True)
class DrawInfo:
    """A scheduled draw: ``entrants`` is None until the pre-queue closes; ``seed`` is empty
    until the draw is done (then anyone can check it against ``commitment``)."""

    commitment: str
    entrants: int | None
    written: int
    drawn_ms: int
    seed: str
    scheme: str


@dataclass(frozen=True)
class EventStats:
    """Live figures of one event, for operators."""

    queue_length: int
    in_checkout: int
    outbox_backlog: int
    tickets_issued: int


class EventStore:
    """Create, change and read event configurations."""

    def __init__(self, redis: Redis, scripts: Scripts | None = None) -> None:
        self.redis = redis
        self.scripts = scripts or Scripts(redis)

    async def create(self, config: EventConfig, actor: Actor | None = None) -> EventConfig:
        """Create the event; ``actor`` is who the audit trail names (default: a program,
        recorded but not published; operator commands pass ``Actor.here``)."""
        config = replace(config, idle_since_ms=await self._idle_since(None, config)).validate()
        who = actor or Actor.program("create")
        await self.scripts.save_event(config.event_id, "create", config.to_fields(), who)
        # The set is a listing index in another hash slot; `update` repairs a missed add.
        await self.redis.sadd(keys.EVENTS, config.event_id)
        if config.opens_ms:
            await self.schedule(config.event_id, config.opens_ms)
        return await self.get(config.event_id)

    async def change(
        self, event_id: str, actor: Actor, *, reopen: bool = False, **changes: Any
    ) -> tuple[EventConfig, int]:
        """Apply ``changes``; the new config and how many fields really changed (0: none,
        and nothing was written or recorded).

        Raises:
            Refused: a closed event would move to another state without ``reopen``.
            WaitroomError: no such event (WTR006), or an invalid value (WTR007).
        """
        current = await self.get(event_id)
        config = replace(current, **changes).validate()
        config = replace(config, idle_since_ms=await self._idle_since(current, config))
        scheduled = 0
        if "opens_ms" in changes and changes["opens_ms"] != current.opens_ms:
            await self.schedule(event_id, config.opens_ms)
            scheduled = 1
        fields = _only(config.to_fields(), changes)
        if config.idle_since_ms != current.idle_since_ms:
            fields["idle_since_ms"] = str(config.idle_since_ms)
        # Which fields an operator set: a refresh from the event service leaves those alone.
        raw = await self.redis.hget(keys.config(event_id), "operator_set")
        before = {n for n in _text(raw or "").split(",") if n}
        named = before | set(changes)
        if named != before:
            fields["operator_set"] = ",".join(sorted(named))
        changed = await self.scripts.save_event(event_id, "update", fields, actor, reopen=reopen)
        await self.redis.sadd(keys.EVENTS, event_id)
        return await self.get(event_id), changed + scheduled

    async def update(
        self, event_id: str, actor: Actor | None = None, *, reopen: bool = False, **changes: Any
    ) -> EventConfig:
        config, _ = await self.change(
            event_id, actor or Actor.program("update"), reopen=reopen, **changes
        )
        return config

    async def set_state(
        self, event_id: str, state: EventState, actor: Actor | None = None, *, reopen: bool = False
    ) -> EventConfig:
        """Move to ``state``; a closed event moves only with ``reopen`` (else ``Refused``),
        since opening or pausing it lets new users join again."""
        who = actor or Actor.program(_STATE_ACTIONS[state])
        return await self.update(event_id, who, reopen=reopen, state=state)

    async def delete(self, event_id: str, *, force: bool) -> DeleteResult:
        """Forget the event: every key under its hash tag, its lock, its place in the listing.

        Refused (``deleted`` False) while users wait or hold checkout slots, unless
        ``force``; outbox messages not yet relayed are dropped (``outbox`` counts them).
        The script removes the keys it knows in one step; a scan then removes any other key
        under the event's tag, so keys added by later features are not left behind.
        """
        result = await self.scripts.delete_event(event_id, force=force)
        if not result.deleted:
            return result
        await self.redis.srem(keys.EVENTS, event_id)
        leftovers = [k async for k in self.redis.scan_iter(match=keys.event_pattern(event_id))]
        if leftovers:
            await self.redis.delete(*leftovers)
        return result

    async def _idle_since(self, current: EventConfig | None, config: EventConfig) -> int:
        """When the idle timeout went on, by Redis's clock: nobody counts as absent for the
        time before it, when nobody was asked to stay."""
        if not config.idle_timeout_seconds:
            return 0
        if current is not None and current.idle_timeout_seconds:
            return current.idle_since_ms
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def schedule(self, event_id: str, opens_ms: int) -> str:
        """Set (or move, or with 0 remove) the event's opening; returns the seed's commitment,
        published at once (see ``shared.draw``)."""
        seed = draw.new_seed()
        return await DrawScripts(self.scripts).schedule(
            event_id, opens_ms, seed, draw.commitment(seed)
        )

    async def draw_info(self, event_id: str) -> DrawInfo | None:
        """The event's draw as the public may see it (no seed before it is revealed)."""
        raw = {
            _text(k): _text(v) for k, v in (await self.redis.hgetall(keys.draw(event_id))).items()
        }
        if not raw:
            return None
        drawn_ms = int(raw.get("drawn_ms", "0"))
        return DrawInfo(
            commitment=raw.get("commitment", ""),
            entrants=int(raw["n"]) if "n" in raw else None,
            written=int(raw.get("written", "0")),
            drawn_ms=drawn_ms,
            seed=raw.get("seed", "") if drawn_ms else "",
            scheme=draw.SCHEME,
        )

    async def get(self, event_id: str) -> EventConfig:
        raw = await self.redis.hgetall(keys.config(event_id))
        if not raw:
            raise WaitroomError(Code.EVENT_NOT_FOUND, f"event {event_id!r} not found")
        return EventConfig.from_fields(event_id, raw)

    async def list_ids(self) -> list[str]:
        return sorted(_text(m) for m in await self.redis.smembers(keys.EVENTS))

    async def list_configs(self) -> list[EventConfig]:
        """Every listed event that has a configuration (an id whose delete was cut short
        between the script and the listing's clean-up is skipped)."""
        configs = []
        for event_id in await self.list_ids():
            raw = await self.redis.hgetall(keys.config(event_id))
            if raw:
                configs.append(EventConfig.from_fields(event_id, raw))
        return configs

    async def stats(self, event_id: str) -> EventStats:
        status = await self.scripts.status(event_id, [])
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(keys.outbox(event_id))
            pipe.get(keys.seq(event_id))
            backlog, seq = await pipe.execute()
        return EventStats(status.queue_length, status.in_checkout, int(backlog), int(seq or 0))


_STATE_ACTIONS = {
    EventState.OPEN: "resume",
    EventState.PAUSED: "pause",
    EventState.CLOSED: "close",
}

_FIELD_OF_CHANGE = {
    "state": ("state",),
    "max_concurrent": ("max_concurrent",),
    "rate": ("rate",),
    "checkout_ttl_seconds": ("checkout_ttl_ms",),
    "session_ttl_seconds": ("session_ttl_ms",),
    "max_queue": ("max_queue",),
    "idle_timeout_seconds": ("idle_timeout_ms",),
    "ip_joins_per_minute": ("ip_joins_per_minute",),
    "ip_live_sessions": ("ip_live_sessions",),
    # opens_ms is written by the draw's own script (``schedule``), with its commitment.
    "opens_ms": (),
}


def _only(fields: dict[str, str], changes: dict[str, Any]) -> dict[str, str]:
    """The stored fields an update names, so the audit shows what the operator changed and a
    field changed by someone else meanwhile is not written back."""
    wanted = {f for name in changes for f in _FIELD_OF_CHANGE.get(name, (name,))}
    return {k: v for k, v in fields.items() if k in wanted}
