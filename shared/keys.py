"""Every Redis key and channel name the waitroom uses; no other module writes a key string.

All keys of one event share the Redis Cluster hash tag ``{EVENT}`` so every script that touches
an event runs on one shard. ``docs/architecture.md`` lists each key's type, lifetime and writer.
"""

from __future__ import annotations

PREFIX = "wr"

#: Set of every configured event id (not hash-tagged: only the CLI and workers list it).
EVENTS = f"{PREFIX}:events"

#: Pub/sub channel; the payload is an event id whose queue or checkout just changed.
NOTIFY_CHANNEL = f"{PREFIX}:notify"

#: Hash of admitter replica id -> last heartbeat (JSON), written by admitters.
ADMITTER_HEARTBEATS = f"{PREFIX}:admitters"

#: Hash of consumer replica id -> last heartbeat (JSON), written by consumers.
CONSUMER_HEARTBEATS = f"{PREFIX}:consumers"


def _event(event_id: str, name: str) -> str:
    return f"{PREFIX}:{{{event_id}}}:{name}"


def config(event_id: str) -> str:
    """Hash: the event's settings and state (open, paused, closed)."""
    return _event(event_id, "config")


def seq(event_id: str) -> str:
    """String counter: the last ticket handed out; strictly increasing per event."""
    return _event(event_id, "seq")


def head(event_id: str) -> str:
    """String counter: the next ticket the admitter will look at (the queue's front)."""
    return _event(event_id, "head")


def holes(event_id: str) -> str:
    """Sorted set: tickets that left the queue while waiting, scored by ticket.

    The queue is the ticket range [head, seq] minus these; a position is
    ``t - head + 1 - ZCOUNT(holes, head, t)``, with no per-user queue entry.
    """
    return _event(event_id, "holes")


def sessions(event_id: str) -> str:
    """Hash: ticket -> session record (JSON array, see ``shared.sessions``)."""
    return _event(event_id, "sessions")


def users(event_id: str) -> str:
    """Hash: user id -> ticket of their live session, so a user holds one live place."""
    return _event(event_id, "users")


def checkout(event_id: str) -> str:
    """Sorted set: tickets of admitted sessions scored by checkout deadline (slot leases)."""
    return _event(event_id, "checkout")


def bucket(event_id: str) -> str:
    """Hash: the admission-rate token bucket (``tokens``, ``ts``)."""
    return _event(event_id, "bucket")


def outbox(event_id: str) -> str:
    """Stream: Kafka messages recorded with the change they report, awaiting relay."""
    return _event(event_id, "outbox")


def done(event_id: str) -> str:
    """Sorted set: tickets of finished sessions scored by when they finished, for purging."""
    return _event(event_id, "done")


def lock(event_id: str) -> str:
    """String: the admitter replica that works this event now (``SET NX PX`` owner token)."""
    return _event(event_id, "lock")


def event_service_refresh(event_id: str) -> str:
    """String with ``PX``: held by the process that asked the event service about this event
    last; while it exists no other process asks (one question per event per interval)."""
    return _event(event_id, "refresh")


def audit(event_id: str) -> str:
    """Stream: operators' changes to the event (who, where from, old and new values), trimmed
    to a retention period and a cap (``shared.audit``)."""
    return _event(event_id, "audit")


def event_pattern(event_id: str) -> str:
    """A SCAN pattern matching every key of the event, with glob characters escaped."""
    escaped = "".join(f"\\{ch}" if ch in "*?[]\\" else ch for ch in event_id)
    return f"{PREFIX}:{{{escaped}}}:*"


def relay_mark(event_id: str) -> str:
    """String: when the outbox relay last checked that replicas hold what it read (ms).

    Written right after the relay reads the outbox, on the same connection, so the ``WAIT``
    that follows covers every write before it (``WAITROOM_REDIS_WAIT_REPLICAS``); in the
    event's slot, so in a cluster it is on the outbox's shard.
    """
    return _event(event_id, "relayed")


#: Appended to an event id published on ``NOTIFY_CHANNEL`` when only the event's outbox needs
#: relaying (``join.lua``, into a full checkout): the admitter relays without an admission step.
#: A newline is never part of an event id (ids refuse control characters).
RELAY_ONLY_SUFFIX = "\n"


# --- sale-day fairness: the draw, presence, per-address limits -------------------------------


def draw(event_id: str) -> str:
    """Hash: the scheduled draw: ``seed`` (secret until revealed), ``commitment``, ``n`` (the
    pre-queue's entrants, tickets 1..n, fixed at the opening), ``written``, ``drawn_ms``."""
    return _event(event_id, "draw")


def draw_order(event_id: str) -> str:
    """String: the ticket at each drawn place 1..n, 4-byte big-endian integers."""
    return _event(event_id, "draw:order")


def draw_rank(event_id: str) -> str:
    """String: the drawn place of each pre-queue ticket 1..n, 4-byte big-endian integers."""
    return _event(event_id, "draw:rank")


def draw_left(event_id: str) -> str:
    """Sorted set: pre-queue tickets that left before the draw placed them (then holes)."""
    return _event(event_id, "draw:left")


def presence(event_id: str) -> str:
    """String: when each queued ticket was last seen (s), 4 bytes per ticket."""
    return _event(event_id, "presence")


def ip_live(event_id: str) -> str:
    """Hash: IP address -> its live sessions, for addresses that have any (limit on)."""
    return _event(event_id, "ip:live")


def ip_joins(event_id: str, ip_address: str) -> str:
    """String counter: joins from one address in its current minute (expires with it)."""
    return _event(event_id, f"ip:joins:{ip_address}")
