"""Process settings: one frozen dataclass per process, read from ``WAITROOM_`` variables.

Each field names its variable and its meaning in ``metadata``; parsing is strict, and a bad
value stops the process at start-up with a message that names the variable.
``waitroom settings`` prints them all, and docs/operations.md is written from the same list.

A value comes from, highest first: a command-line flag of ``waitroom`` (``--redis-url``,
``--kafka``), the environment, a settings file (``--env-file``, ``WAITROOM_ENV_FILE`` or
``/etc/waitroom/waitroom.env``, the file the systemd unit loads), the running dev stack, or the
field's default. The layers other than the environment are installed for one command by
``layered`` (``shared.cli`` does it); ``origin`` says where a value came from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import ipaddress
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

PREFIX = "WAITROOM_"

#: ``WAITROOM_`` variables read outside the settings classes, so no typo warning names them.
OTHER_VARIABLES = (
    "WAITROOM_ENV_FILE",  # where the settings file is (shared.cli)
    "WAITROOM_DEV_REDIS_SERVER",  # the dev stack's redis-server binary (waitroom_dev)
    "WAITROOM_WRITE_DOCS",  # tests: rewrite the generated docs table
)

#: Where the systemd unit's settings file lives (deploy/supervisor/waitroom.service).
SYSTEM_ENV_FILE = Path("/etc/waitroom/waitroom.env")

ENVIRONMENT = "environment"
DEFAULT = "default"


class SettingsError(ValueError):
    """A variable holds a value the process cannot run with."""


def setting(
    env: str, default: Any, help: str, *, minimum: float | None = None, secret: bool = False
) -> Any:
    """Declare a field read from ``env``; ``secret`` values are never printed."""
    return field(
        default=default,
        metadata={"env": env, "help": help, "minimum": minimum, "secret": secret},
    )


@dataclass(frozen=True)
class Layer:
    """Values from one place other than the environment, and how to name that place."""

    source: str
    values: Mapping[str, str]


# Installed by ``layered`` for the length of one command; empty in the processes.
_above_env: list[Layer] = []
_below_env: list[Layer] = []


@contextlib.contextmanager
def layered(above: list[Layer], below: list[Layer]) -> Iterator[None]:
    """Let ``load`` read ``above`` before the environment and ``below`` after it."""
    saved = list(_above_env), list(_below_env)
    _above_env[:], _below_env[:] = above, below
    try:
        yield
    finally:
        _above_env[:], _below_env[:] = saved


def lookup(name: str, environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """``(raw value, source)`` of variable ``name``, or None when only its default applies.

    With ``environ``, that mapping alone is read (tests, generated docs).
    """
    if environ is not None:
        return (environ[name], ENVIRONMENT) if name in environ else None
    for layer in _above_env:
        if name in layer.values:
            return layer.values[name], layer.source
    if name in os.environ:
        return os.environ[name], ENVIRONMENT
    for layer in _below_env:
        if name in layer.values:
            return layer.values[name], layer.source
    return None


def lookup_or_default(name: str) -> str:
    """The raw value of ``name`` in effect, its default when it is set nowhere."""
    found = lookup(name)
    if found:
        return found[0]
    for cls in settings_classes():
        for f in dataclasses.fields(cls):
            if f.metadata["env"] == name:
                return str(f.default)
    raise KeyError(name)


def origin(name: str) -> str:
    """Where the value of ``name`` in effect comes from (``default`` when nowhere)."""
    found = lookup(name)
    return found[1] if found else DEFAULT


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
    """Build ``cls`` from its variables (the layers above, or ``environ`` alone), strictly.

    Raises:
        SettingsError: a value cannot be parsed or is out of range; the message names the
            variable.
    """
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = f.metadata["env"]
        found = lookup(name, environ)
        if found is not None:
            values[f.name] = _parse(str(f.type), name, found[0], f.metadata["minimum"])
    return cls(**values)


def settings_classes() -> list[type[Any]]:
    """Every settings class of this module, in the order they are defined."""
    return [
        obj
        for obj in vars(sys.modules[__name__]).values()
        if isinstance(obj, type)
        and dataclasses.is_dataclass(obj)
        and all("env" in f.metadata for f in dataclasses.fields(obj))
        and dataclasses.fields(obj)
    ]


def describe(cls: type[Any]) -> list[tuple[str, str, str]]:
    """``(variable, default, help)`` for every field of a settings class."""
    return [
        (f.metadata["env"], str(f.default), f.metadata["help"]) for f in dataclasses.fields(cls)
    ]


def effective(cls: type[Any]) -> tuple[list[dict[str, str]], list[str]]:
    """The value in effect of every field of ``cls`` as ``waitroom settings`` shows it
    (secrets hidden), with its source and default, and the problems of the values set.
    """
    rows, problems = [], []
    for f in dataclasses.fields(cls):
        name, secret = f.metadata["env"], f.metadata.get("secret", False)
        found = lookup(name)
        raw, source = found if found else (str(f.default), DEFAULT)
        if found:
            try:
                _parse(str(f.type), name, raw, f.metadata["minimum"])
            except SettingsError as exc:
                problems.append(str(exc))
        rows.append(
            {
                "variable": name,
                "value": shown(name, raw, secret),
                "source": source,
                "default": str(f.default),
                "help": f.metadata["help"],
            }
        )
    if not problems:
        try:
            load(cls)
        except SettingsError as exc:
            problems.append(str(exc))
    return rows, problems


def known_variables() -> list[str]:
    """Every ``WAITROOM_`` variable something reads."""
    names = [f.metadata["env"] for c in settings_classes() for f in dataclasses.fields(c)]
    return [*names, *OTHER_VARIABLES]


def unknown_variables(names: list[str]) -> list[str]:
    """A warning for each ``WAITROOM_`` name that no setting knows, naming the closest one.

    A typo such as ``WAITROOM_REDSI_URL`` would otherwise leave the real setting at its
    default without a word.
    """
    known = known_variables()
    warnings = []
    for name in sorted(set(names)):
        if not name.startswith(PREFIX) or name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        hint = f"did you mean {close[0]}?" if close else "see `waitroom settings`"
        warnings.append(f"{name} is not a waitroom setting and is ignored; {hint}")
    return warnings


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and listings."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return url


def shown(name: str, value: Any, secret: bool) -> str:
    """How ``waitroom settings`` and messages show a value: secrets never, URLs without
    their password."""
    text = str(value)
    if secret:
        return f"(set, {len(text.encode())} bytes)" if text else ""
    return redact_url(text) if "://" in text else text


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines of a settings file, in the systemd ``EnvironmentFile`` format
    (comments, blank lines, an optional ``export``, optional matching quotes).

    Raises:
        SettingsError: the file cannot be read or a line is not ``NAME=value``.
    """
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"settings file {path}: {exc}") from None
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise SettingsError(f"settings file {path}, line {number}: not NAME=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _check_redis_url(url: str) -> None:
    from redis.connection import parse_url

    try:
        parse_url(url)  # type: ignore[no-untyped-call]
        parts = urlsplit(url)
        database = parts.path.strip("/")
        if parts.scheme != "unix" and database and not database.isdigit():
            raise ValueError(f"the database {database!r} is not a number")
        if parts.scheme in ("redis", "rediss") and not parts.hostname:
            raise ValueError("no host")
    except ValueError as exc:
        raise SettingsError(
            f"WAITROOM_REDIS_URL={redact_url(url)!r} is not a Redis URL ({exc}); "
            "e.g. redis://host:6379/0, rediss://host:6380/0, unix:///path/redis.sock"
        ) from None


def _check_bootstrap(servers: str) -> None:
    for server in (s.strip() for s in servers.split(",")):
        if not server:
            continue
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(
                f"WAITROOM_KAFKA_BOOTSTRAP_SERVERS={servers!r}: {server!r} is not host:port"
            )


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
        secret=True,
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
        _check_redis_url(self.redis_url)
        _check_bootstrap(self.kafka_bootstrap_servers)
        if self.log_level.strip().upper() not in _LOG_LEVELS:
            raise SettingsError(
                f"WAITROOM_LOG_LEVEL={self.log_level!r} is not a level; "
                f"one of {', '.join(_LOG_LEVELS)}"
            )
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
