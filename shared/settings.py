"""Process settings: one frozen dataclass per process, read from ``WAITROOM_`` variables.

Each field names its variable and its meaning in ``metadata``; parsing is strict, and a bad
value stops the process at start-up with a message that names the variable.
``waitroom settings`` prints them all, and docs/operations.md is written from the same list.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingsError(ValueError):
    """A variable holds a value the process cannot run with."""


def setting(env: str, default: Any, help: str, *, minimum: float | None = None) -> Any:
    """Declare a field read from ``env``."""
    return field(default=default, metadata={"env": env, "help": help, "minimum": minimum})


def _parse(kind: str, name: str, raw: str, minimum: float | None) -> Any:
    text = raw.strip()
    value: Any
    try:
        if kind == "bool":
            lowered = text.lower()
            if lowered not in _TRUE | _FALSE:
                raise ValueError
            value = lowered in _TRUE
        elif kind == "int":
            value = int(text)
        elif kind == "float":
            value = float(text)
        else:
            value = raw
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a valid {kind}") from None
    if minimum is not None and kind in ("int", "float") and value < minimum:
        raise SettingsError(f"{name}={raw!r} must be at least {minimum:g}")
    return value


def load(cls: type[T], environ: Mapping[str, str] | None = None) -> T:
    """Build ``cls`` from the environment (or ``environ``), strictly."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = f.metadata["env"]
        if name in env:
            values[f.name] = _parse(str(f.type), name, env[name], f.metadata["minimum"])
    return cls(**values)


def describe(cls: type[Any]) -> list[tuple[str, str, str]]:
    """``(variable, default, help)`` for every field of a settings class."""
    return [
        (f.metadata["env"], str(f.default), f.metadata["help"]) for f in dataclasses.fields(cls)
    ]


@dataclass(frozen=True)
class CommonSettings:
    """What every process needs: where Redis and Kafka are, and the token secret."""

    redis_url: str = setting("WAITROOM_REDIS_URL", "redis://127.0.0.1:6379/0", "Redis URL.")
    kafka_bootstrap_servers: str = setting(
        "WAITROOM_KAFKA_BOOTSTRAP_SERVERS",
        "127.0.0.1:9092",
        "Comma-separated Kafka bootstrap servers; empty turns Kafka off (outbox only).",
    )
    jwt_secret: str = setting(
        "WAITROOM_JWT_SECRET",
        "",
        "HS256 secret shared with the order service (required, >= 32 bytes).",
    )
    metrics_port: int = setting(
        "WAITROOM_METRICS_PORT", 0, "Port for Prometheus /metrics; 0 turns it off.", minimum=0
    )
    # Every interface by default: /metrics is only on when a port is chosen, and then it is for
    # a scraper on another host or pod (Kubernetes scrapes the pod IP, a supervisor host is
    # scraped remotely); a loopback default would silently stop those scrapes.
    metrics_addr: str = setting(
        "WAITROOM_METRICS_ADDR",
        "0.0.0.0",
        "Address /metrics listens on (IPv4 or IPv6); 127.0.0.1 keeps it on this host.",
    )
    log_level: str = setting("WAITROOM_LOG_LEVEL", "INFO", "Python logging level.")

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.metrics_addr.strip())
        except ValueError:
            raise SettingsError(
                f"WAITROOM_METRICS_ADDR={self.metrics_addr!r} is not an IP address "
                "(e.g. 0.0.0.0, 127.0.0.1, ::)"
            ) from None

    @property
    def kafka_enabled(self) -> bool:
        return bool(self.kafka_bootstrap_servers.strip())

    def require_secret(self) -> str:
        # RFC 7518 3.2: an HS256 key must be at least 256 bits.
        if len(self.jwt_secret.encode("utf-8")) < 32:
            raise SettingsError("WAITROOM_JWT_SECRET must be set to at least 32 bytes")
        return self.jwt_secret


@dataclass(frozen=True)
class KafkaClientSettings:
    """Kafka client tuning shared by the admitter's producer and the consumer."""

    linger_ms: int = setting("WAITROOM_KAFKA_LINGER_MS", 5, "Producer linger (ms).", minimum=0)
    request_timeout_ms: int = setting(
        "WAITROOM_KAFKA_REQUEST_TIMEOUT_MS", 10000, "Kafka request timeout (ms).", minimum=100
    )
    session_timeout_ms: int = setting(
        "WAITROOM_KAFKA_SESSION_TIMEOUT_MS",
        45000,
        "Consumer group session timeout (ms). Apache Kafka needs >= 6000; tests use 2000.",
        minimum=100,
    )
    heartbeat_interval_ms: int = setting(
        "WAITROOM_KAFKA_HEARTBEAT_INTERVAL_MS", 3000, "Consumer heartbeat (ms).", minimum=10
    )
    fetch_max_wait_ms: int = setting(
        "WAITROOM_KAFKA_FETCH_MAX_WAIT_MS", 100, "Consumer fetch max wait (ms).", minimum=0
    )


@dataclass(frozen=True)
class ApiSettings:
    """The gRPC front door."""

    addr: str = setting("WAITROOM_API_ADDR", "0.0.0.0:50051", "gRPC listen address.")
    grace_seconds: float = setting(
        "WAITROOM_API_GRACE_SECONDS", 10.0, "Drain time on SIGTERM (s).", minimum=0
    )
    # The defaults are the old service's, so the gateway and the shop need no change.
    checkout_url: str = setting(
        "WAITROOM_CHECKOUT_URL",
        "/checkout",
        "Checkout URL template; {event_id} and {session_id} are filled in.",
    )
    websocket_url: str = setting(
        "WAITROOM_WEBSOCKET_URL",
        "/api/v1/waitroom/stream/{session_id}",
        "Position stream URL template returned by JoinQueue ({event_id}, {session_id}).",
    )
    stream_poll_seconds: float = setting(
        "WAITROOM_API_STREAM_POLL_SECONDS",
        5.0,
        "Fallback re-read of streamed sessions when no change was announced (s); changes are "
        "announced, so this only covers a lost notification.",
        minimum=0.05,
    )
    stream_min_interval_seconds: float = setting(
        "WAITROOM_API_STREAM_MIN_INTERVAL_SECONDS",
        0.1,
        "Shortest gap between two re-reads of one event's streams (s); coalesces bursts.",
        minimum=0,
    )
    reuse_port: bool = setting(
        "WAITROOM_API_REUSE_PORT", True, "Let several API processes share one port."
    )
    redis_connections: int = setting(
        "WAITROOM_API_REDIS_CONNECTIONS",
        64,
        "Most Redis connections one API process opens; more concurrent requests wait.",
        minimum=1,
    )


@dataclass(frozen=True)
class AdmitterSettings:
    """The admission worker."""

    sweep_seconds: float = setting(
        "WAITROOM_ADMITTER_SWEEP_SECONDS", 1.0, "Periodic sweep interval (s).", minimum=0.01
    )
    lock_ttl_ms: int = setting(
        "WAITROOM_ADMITTER_LOCK_TTL_MS", 5000, "Per-event lock lifetime (ms).", minimum=100
    )
    batch_size: int = setting(
        "WAITROOM_ADMITTER_BATCH_SIZE", 500, "Most users admitted by one script call.", minimum=1
    )
    outbox_batch: int = setting(
        "WAITROOM_ADMITTER_OUTBOX_BATCH", 1000, "Most outbox records relayed per round.", minimum=1
    )
    retention_seconds: int = setting(
        "WAITROOM_ADMITTER_RETENTION_SECONDS",
        86400,
        "How long finished sessions stay readable before they are purged (s).",
        minimum=1,
    )
    grace_seconds: float = setting(
        "WAITROOM_ADMITTER_GRACE_SECONDS", 10.0, "Drain time on SIGTERM (s).", minimum=0
    )
    replica_id: str = setting(
        "WAITROOM_ADMITTER_REPLICA_ID",
        "",
        "This replica's name in heartbeats and lock tokens; empty: hostname-pid.",
    )
    # 65,536 entries are two 256 KiB SETRANGEs per call: well under a millisecond in Redis.
    draw_chunk: int = setting(
        "WAITROOM_ADMITTER_DRAW_CHUNK",
        65536,
        "Places written per call by a scheduled opening's draw (and pre-queue leavers placed).",
        minimum=1,
    )


@dataclass(frozen=True)
class ConsumerSettings:
    """The checkout-outcome consumer."""

    group: str = setting("WAITROOM_CONSUMER_GROUP", "waitroom-service", "Kafka consumer group.")
    topic_completed: str = setting(
        "WAITROOM_TOPIC_CHECKOUT_COMPLETED", "checkout.completed", "Completed checkouts topic."
    )
    topic_failed: str = setting(
        "WAITROOM_TOPIC_CHECKOUT_FAILED", "checkout.failed", "Failed checkouts topic."
    )
    topic_expired: str = setting(
        "WAITROOM_TOPIC_CHECKOUT_EXPIRED", "checkout.expired", "Expired checkouts topic."
    )
    dlq_topic: str = setting("WAITROOM_DLQ_TOPIC", "waitroom.dlq", "Dead-letter topic.")
    max_message_bytes: int = setting(
        "WAITROOM_CONSUMER_MAX_MESSAGE_BYTES",
        65536,
        "Larger checkout messages are dead-lettered unread.",
        minimum=64,
    )
    grace_seconds: float = setting(
        "WAITROOM_CONSUMER_GRACE_SECONDS", 10.0, "Drain time on SIGTERM (s).", minimum=0
    )
    replica_id: str = setting(
        "WAITROOM_CONSUMER_REPLICA_ID",
        "",
        "This replica's name in heartbeats (`waitroom consumer check`); empty: hostname-pid.",
    )
