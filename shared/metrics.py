"""Every Prometheus metric the waitroom exports, in one catalogue.

Processes import the ones they update; labels stay low-cardinality (event id, method, code,
outcome; never a session or user id). An ``event`` label only ever holds a configured event's
id: the API labels a series only after a script found the event's records (a session created,
left, or read for a stream), so callers cannot grow /metrics by making event ids up.
Labelled metrics a process never touches export nothing, so each process's /metrics shows only
its own series.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

_WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

# --- API -------------------------------------------------------------------------------------
JOINS = Counter("waitroom_joins_total", "Sessions created by JoinQueue.", ["event"])
LEAVES = Counter(
    "waitroom_leaves_total",
    "Sessions closed before checkout ended, by reason.",
    ["event", "reason"],
)
RPC_DURATION = Histogram(
    "waitroom_rpc_duration_seconds",
    "gRPC handling time by method and status code (streams: time to first message).",
    ["method", "code"],
    buckets=_FAST_BUCKETS,
)
STREAMS_OPEN = Gauge("waitroom_streams_open", "StreamQueuePosition streams open in this process.")
STREAM_UPDATES = Counter(
    "waitroom_stream_updates_total", "PositionUpdate messages sent to streams.", ["event"]
)
JOINS_REFUSED = Counter(
    "waitroom_joins_rate_limited_total",
    "Joins refused with WTR010 by a per-address limit (limit: joins_per_minute or "
    "live_sessions); counted by event, never by address.",
    ["event", "limit"],
)

# --- admitter --------------------------------------------------------------------------------
ADMISSIONS = Counter("waitroom_admissions_total", "Users admitted to checkout.", ["event"])
EXPIRATIONS = Counter(
    "waitroom_expirations_total",
    "Sessions closed as EXPIRED by the admitter (kind: queue or checkout).",
    ["event", "kind"],
)
QUEUE_LENGTH = Gauge("waitroom_queue_length", "Users waiting in the queue.", ["event"])
CHECKOUT_USERS = Gauge("waitroom_checkout_users", "Users holding a checkout slot.", ["event"])
CHECKOUT_CAPACITY = Gauge(
    "waitroom_checkout_capacity", "The event's max users in checkout at once.", ["event"]
)
WAIT_SECONDS = Histogram(
    "waitroom_wait_seconds", "Time from joining to admission.", ["event"], buckets=_WAIT_BUCKETS
)
EVENT_PAUSED = Gauge(
    "waitroom_event_paused",
    "1 while the event is paused on purpose (admits nobody), else 0.",
    ["event"],
)
LOCK_OWNED = Gauge(
    "waitroom_lock_owned", "1 while this admitter holds the event's lock, else 0.", ["event"]
)
ABANDONED = Counter(
    "waitroom_abandoned_total",
    "Queued sessions dropped when reached because they were absent longer than the event's "
    "idle timeout.",
    ["event"],
)
DRAWS = Counter(
    "waitroom_draws_total", "Scheduled openings drawn to the end by this admitter.", ["event"]
)
OUTBOX_BACKLOG = Gauge(
    "waitroom_outbox_backlog", "Outbox records not yet acknowledged by Kafka.", ["event"]
)
OUTBOX_RELAYED = Counter(
    "waitroom_outbox_relayed_total", "Outbox records acknowledged by Kafka.", ["topic"]
)
RELAY_LAG = Histogram(
    "waitroom_outbox_relay_lag_seconds",
    "Time from recording a message in the outbox to Kafka's acknowledgement.",
    buckets=_FAST_BUCKETS,
)

# --- consumer --------------------------------------------------------------------------------
CHECKOUT_MESSAGES = Counter(
    "waitroom_checkout_messages_total",
    "Checkout outcome messages handled (result: done, already, not_admitted, unknown, "
    "not_ours: no waitroom session id, bad_timestamp: handled with the record's own time).",
    ["outcome", "result"],
)
CONSUMER_REPLAYS = Counter(
    "waitroom_consumer_replays_total",
    "Times a consumer applied its last outcomes again (WAITROOM_CONSUMER_REPLAY_SECONDS) "
    "because Redis was another server: one restarted or promoted may lack them.",
)
DEAD_LETTERS = Counter(
    "waitroom_dead_letters_total",
    "Messages sent to the dead-letter topic, by where they came from (the consumed topic, or "
    "outbox for a record the admitter's relay could not turn into its message).",
    ["source"],
)

# --- every process ---------------------------------------------------------------------------
DEPENDENCY_ERRORS = Counter(
    "waitroom_dependency_errors_total",
    "Failed calls to Redis or Kafka that were retried.",
    ["dependency"],
)
INTERNAL_ERRORS = Counter(
    "waitroom_internal_errors_total",
    "Failures of our own (a Lua script error, an unexpected exception), logged with a traceback.",
    ["where"],
)


def serve(port: int, addr: str) -> None:
    """Expose /metrics on ``addr``:``port`` (port 0: off): WAITROOM_METRICS_ADDR and
    WAITROOM_METRICS_PORT.

    Raises:
        OSError: the address cannot be bound (port in use, address not on this host).
    """
    if port:
        start_http_server(port, addr=addr.strip())


# --- operator dashboards: Kafka consumer lag, Redis health ------------------------------------
CONSUMER_LAG = Gauge(
    "waitroom_consumer_lag_messages",
    "Checkout messages not yet committed by the consumer group (end offset minus committed "
    "offset), summed over the partitions this replica holds, per topic.",
    ["topic"],
)
REDIS_MEMORY = Gauge(
    "waitroom_redis_memory_bytes", "Redis used_memory (INFO memory), read every admitter sweep."
)
REDIS_MAXMEMORY = Gauge(
    "waitroom_redis_maxmemory_bytes", "Redis maxmemory (INFO memory); 0 when unlimited."
)
REDIS_PING = Gauge(
    "waitroom_redis_ping_seconds", "Round trip of one PING from the admitter, every sweep."
)

# --- recovery (docs/reliability.md) ------------------------------------------------------------
EVENT_RECOVERING = Gauge(
    "waitroom_event_recovering",
    "1 while the event's state in Redis is behind Kafka, being rebuilt from it, or missing "
    "(joins answer WTR011 and nobody is admitted), else 0.",
    ["event"],
)
REDIS_REGRESSIONS = Counter(
    "waitroom_redis_regressions_total",
    "Times Redis was found behind Kafka for an event (it restarted or failed over and lost "
    "writes, or restarted empty).",
    ["event"],
)
RECOVERY_LOST_JOINS = Counter(
    "waitroom_recovery_lost_joins_total",
    "Joins acknowledged but lost with Redis before they reached Kafka, found by recoveries.",
    ["event"],
)
