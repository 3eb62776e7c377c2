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
import math
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from shared import secrets

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
    """Declare a field read from ``env``.

    A ``secret`` may also come from ``env + "_FILE"`` (a file holding it, ``shared.secrets``),
    and ``waitroom settings`` shows only where it came from, never its value.
    """
    return field(
        default=default,
        repr=not secret,  # a secret never reaches a log line through a settings repr
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


def _secret_view(name: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The secret ``name`` and its ``_FILE`` twin as the layers give them, for
    ``shared.secrets``, which reads one or the other."""
    view = {}
    for variable in (name, name + secrets.FILE_SUFFIX):
        found = lookup(variable, environ)
        if found is not None:
            view[variable] = found[0]
    return view


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
            if not math.isfinite(value):  # nan passes every minimum; inf is no duration
                raise ValueError
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
        if f.metadata["secret"]:
            try:
                found_secret = secrets.read_secret(_secret_view(name, environ), name)
            except secrets.SecretError as exc:
                raise SettingsError(str(exc)) from None
            if found_secret.source is not secrets.Source.UNSET:
                values[f.name] = found_secret.value
            continue
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
    return [(f.metadata["env"], str(f.default), _help(f)) for f in dataclasses.fields(cls)]


def _help(f: dataclasses.Field[Any]) -> str:
    text: str = f.metadata["help"]
    if f.metadata["secret"]:
        text += f" Or {f.metadata['env']}{secrets.FILE_SUFFIX}: a file holding it."
    return text


#: What kafka-python accepts as ``security_protocol``.
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
#: The SASL mechanisms offered: those kafka-python implements with a user name and password
#: (kafka/net/sasl: PLAIN, and SCRAM with SHA-256 or SHA-512).
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def effective(cls: type[Any]) -> tuple[list[dict[str, str]], list[str]]:
    """The value in effect of every field of ``cls`` as ``waitroom settings`` shows it
    (secrets hidden), with its source and default, and the problems of the values set.
    """
    rows, problems = [], []
    for f in dataclasses.fields(cls):
        name, secret = f.metadata["env"], f.metadata.get("secret", False)
        if secret:
            rows.append(_secret_row(f))
            continue
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
                "secret": False,
            }
        )
    if not problems:
        try:
            load(cls)
        except SettingsError as exc:
            problems.append(str(exc))
    return rows, problems


def _secret_row(f: dataclasses.Field[Any]) -> dict[str, Any]:
    """A secret's row: never its value, only where it would be read from."""
    name = f.metadata["env"]
    file_found = lookup(name + secrets.FILE_SUFFIX)
    found = lookup(name)
    if file_found is not None:
        value, source = "(from file)", file_found[1]
    elif found is not None:
        value, source = "(set)", found[1]
    else:
        value, source = "(not set)", DEFAULT
    return {
        "variable": name,
        "value": value,
        "source": source,
        "default": "",
        "help": _help(f),
        "secret": True,
    }


def known_variables() -> list[str]:
    """Every ``WAITROOM_`` variable something reads."""
    fields = [f for c in settings_classes() for f in dataclasses.fields(c)]
    names = [f.metadata["env"] for f in fields]
    names += [f.metadata["env"] + secrets.FILE_SUFFIX for f in fields if f.metadata["secret"]]
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
    # --- Kafka security: every Kafka client gets these through shared.kafka.client_options.
    kafka_security_protocol: str = setting(
        "WAITROOM_KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        "How clients talk to Kafka: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.",
    )
    kafka_sasl_mechanism: str = setting(
        "WAITROOM_KAFKA_SASL_MECHANISM",
        "",
        "With SASL_PLAINTEXT or SASL_SSL: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.",
    )
    kafka_sasl_username: str = setting(
        "WAITROOM_KAFKA_SASL_USERNAME", "", "SASL user name (SASL_PLAINTEXT, SASL_SSL)."
    )
    kafka_sasl_password: str = setting(
        "WAITROOM_KAFKA_SASL_PASSWORD", "", "SASL password (never printed).", secret=True
    )
    kafka_ssl_cafile: str = setting(
        "WAITROOM_KAFKA_SSL_CAFILE",
        "",
        "PEM file of the CAs the brokers' certificates must chain to (SSL, SASL_SSL); "
        "empty: the system's CAs.",
    )
    kafka_ssl_certfile: str = setting(
        "WAITROOM_KAFKA_SSL_CERTFILE",
        "",
        "PEM client certificate, for brokers that require one (mutual TLS); empty: none.",
    )
    kafka_ssl_keyfile: str = setting(
        "WAITROOM_KAFKA_SSL_KEYFILE",
        "",
        "PEM private key of WAITROOM_KAFKA_SSL_CERTFILE; empty: the key is in that file.",
    )
    kafka_ssl_password: str = setting(
        "WAITROOM_KAFKA_SSL_PASSWORD",
        "",
        "Password of an encrypted WAITROOM_KAFKA_SSL_KEYFILE (never printed).",
        secret=True,
    )

    # --- Redis deployment: mode, TLS, auth, durability (docs/operations.md, "Redis") ---------
    # Checked together by shared.redis_config when the client is built (a bad combination
    # names the variable); secrets come from the environment or a file, never the command line.
    redis_mode: str = setting(
        "WAITROOM_REDIS_MODE",
        "standalone",
        "standalone (WAITROOM_REDIS_URL is the server), cluster (it is any node of a Redis "
        "Cluster) or sentinel (WAITROOM_REDIS_SENTINELS find the master).",
    )
    redis_cluster_nodes: str = setting(
        "WAITROOM_REDIS_CLUSTER_NODES",
        "",
        "Cluster mode: more nodes to start from (host:port,...) if the URL's node is down.",
    )
    redis_sentinels: str = setting(
        "WAITROOM_REDIS_SENTINELS",
        "",
        "Sentinel mode: the Sentinels (host:port,...); the URL then gives only scheme and db.",
    )
    redis_master_name: str = setting(
        "WAITROOM_REDIS_MASTER_NAME", "", "Sentinel mode: the monitored master's name."
    )
    redis_username: str = setting(
        "WAITROOM_REDIS_USERNAME", "", "Redis ACL user (empty: the URL's, else default)."
    )
    redis_password: str = setting(
        "WAITROOM_REDIS_PASSWORD",
        "",
        "Password of the Redis ACL user (or requirepass); never printed.",
        secret=True,
    )
    redis_sentinel_username: str = setting(
        "WAITROOM_REDIS_SENTINEL_USERNAME", "", "ACL user on the Sentinels, if they need one."
    )
    redis_sentinel_password: str = setting(
        "WAITROOM_REDIS_SENTINEL_PASSWORD",
        "",
        "Password on the Sentinels, if they need one; never printed.",
        secret=True,
    )
    redis_tls_ca_file: str = setting(
        "WAITROOM_REDIS_TLS_CA_FILE",
        "",
        "rediss:// only: CA bundle (PEM) that signed the servers' certificates; empty: the "
        "system's.",
    )
    redis_tls_cert_file: str = setting(
        "WAITROOM_REDIS_TLS_CERT_FILE", "", "rediss:// only: client certificate (PEM)."
    )
    redis_tls_key_file: str = setting(
        "WAITROOM_REDIS_TLS_KEY_FILE", "", "rediss:// only: the client certificate's key (PEM)."
    )
    redis_tls_check_hostname: bool = setting(
        "WAITROOM_REDIS_TLS_CHECK_HOSTNAME",
        True,
        "rediss:// only: the server certificate must name the host connected to.",
    )
    redis_wait_replicas: int = setting(
        "WAITROOM_REDIS_WAIT_REPLICAS",
        0,
        "Replicas that must hold a join, leave, admission or checkout outcome before it is "
        "answered, relayed or committed (WAIT); 0: do not wait.",
        minimum=0,
    )
    redis_wait_timeout_ms: int = setting(
        "WAITROOM_REDIS_WAIT_TIMEOUT_MS",
        500,
        "Longest wait for those replicas (ms); short of them the call fails as retryable.",
        minimum=1,
    )

    def __post_init__(self) -> None:
        _check_redis_url(self.redis_url)
        _check_bootstrap(self.kafka_bootstrap_servers)
        if self.log_level.strip().upper() not in _LOG_LEVELS:
            raise SettingsError(
                f"WAITROOM_LOG_LEVEL={self.log_level!r} is not a level; "
                f"one of {', '.join(_LOG_LEVELS)}"
            )
        self._check_kafka_security()
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

    @property
    def kafka_tls(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    @property
    def kafka_sasl(self) -> bool:
        return self.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def _check_kafka_security(self) -> None:
        """The values on their own and together; files are read in require_kafka_security."""
        protocol = self.kafka_security_protocol
        if protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise SettingsError(
                f"WAITROOM_KAFKA_SECURITY_PROTOCOL={protocol!r} is not one of "
                + ", ".join(KAFKA_SECURITY_PROTOCOLS)
            )
        mechanism = self.kafka_sasl_mechanism
        if mechanism and mechanism not in KAFKA_SASL_MECHANISMS:
            raise SettingsError(
                f"WAITROOM_KAFKA_SASL_MECHANISM={mechanism!r} is not one of "
                + ", ".join(KAFKA_SASL_MECHANISMS)
            )
        # Settings that the protocol would silently ignore are refused: a mounted client
        # certificate with PLAINTEXT means someone forgot the protocol, not that they want
        # the certificate ignored.
        unused = []
        if not self.kafka_sasl:
            unused += [("WAITROOM_KAFKA_SASL_MECHANISM", mechanism)]
            unused += [("WAITROOM_KAFKA_SASL_USERNAME", self.kafka_sasl_username)]
        if not self.kafka_tls:
            unused += [("WAITROOM_KAFKA_SSL_CAFILE", self.kafka_ssl_cafile)]
            unused += [("WAITROOM_KAFKA_SSL_CERTFILE", self.kafka_ssl_certfile)]
            unused += [("WAITROOM_KAFKA_SSL_KEYFILE", self.kafka_ssl_keyfile)]
        for name, value in unused:
            if value:
                raise SettingsError(
                    f"{name} is set but WAITROOM_KAFKA_SECURITY_PROTOCOL={protocol} does not use it"
                )
        if self.kafka_sasl and not mechanism:
            raise SettingsError(
                f"WAITROOM_KAFKA_SECURITY_PROTOCOL={protocol} needs WAITROOM_KAFKA_SASL_MECHANISM"
                " (" + ", ".join(KAFKA_SASL_MECHANISMS) + ")"
            )
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise SettingsError(
                "WAITROOM_KAFKA_SSL_KEYFILE is set without WAITROOM_KAFKA_SSL_CERTFILE"
            )

    def require_kafka_security(self) -> None:
        """Check, at start-up, what the Kafka clients will need when they connect: SASL
        credentials, and certificate files that can be read and a key that matches its
        certificate. Raises SettingsError naming the setting, so a process stops at once
        instead of retrying a connection that can never work."""
        if not self.kafka_enabled:
            return
        if self.kafka_sasl:
            for name, value in (
                ("WAITROOM_KAFKA_SASL_USERNAME", self.kafka_sasl_username),
                ("WAITROOM_KAFKA_SASL_PASSWORD", self.kafka_sasl_password),
            ):
                if not value:
                    raise SettingsError(
                        f"WAITROOM_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} "
                        f"needs {name}"
                    )
        if not self.kafka_tls:
            return
        try:
            if self.kafka_ssl_cafile:
                secrets.check_ca("WAITROOM_KAFKA_SSL_CAFILE", self.kafka_ssl_cafile)
            if self.kafka_ssl_certfile:
                secrets.check_key_pair(
                    "WAITROOM_KAFKA_SSL_CERTFILE",
                    self.kafka_ssl_certfile,
                    "WAITROOM_KAFKA_SSL_KEYFILE",
                    self.kafka_ssl_keyfile,
                    self.kafka_ssl_password,
                    password_setting="WAITROOM_KAFKA_SSL_PASSWORD",
                )
        except secrets.SecretError as exc:
            raise SettingsError(str(exc)) from None


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
    # --- TLS: server certificate, client certificates (mTLS), a plaintext port for probes.
    tls_certfile: str = setting(
        "WAITROOM_API_TLS_CERTFILE",
        "",
        "PEM certificate chain the API serves TLS with; empty: plaintext gRPC.",
    )
    tls_keyfile: str = setting(
        "WAITROOM_API_TLS_KEYFILE", "", "PEM private key of WAITROOM_API_TLS_CERTFILE."
    )
    tls_client_cafile: str = setting(
        "WAITROOM_API_TLS_CLIENT_CAFILE",
        "",
        "PEM CAs a caller's certificate must chain to; set, every caller needs a certificate "
        "(mutual TLS). Needs WAITROOM_API_TLS_CERTFILE.",
    )
    health_addr: str = setting(
        "WAITROOM_API_HEALTH_ADDR",
        "",
        "Extra plaintext address serving only grpc.health.v1, for probes that cannot speak "
        "TLS (Kubernetes' gRPC probes); empty: none.",
    )

    def __post_init__(self) -> None:
        if bool(self.tls_certfile) != bool(self.tls_keyfile):
            given, missing = (
                ("WAITROOM_API_TLS_CERTFILE", "WAITROOM_API_TLS_KEYFILE")
                if self.tls_certfile
                else ("WAITROOM_API_TLS_KEYFILE", "WAITROOM_API_TLS_CERTFILE")
            )
            raise SettingsError(f"{given} is set without {missing}")
        if self.tls_client_cafile and not self.tls_certfile:
            raise SettingsError(
                "WAITROOM_API_TLS_CLIENT_CAFILE needs WAITROOM_API_TLS_CERTFILE and "
                "WAITROOM_API_TLS_KEYFILE: client certificates are only asked for over TLS"
            )
        if self.health_addr and self.health_addr == self.addr:
            raise SettingsError(
                f"WAITROOM_API_HEALTH_ADDR={self.health_addr!r} is WAITROOM_API_ADDR itself"
            )

    @property
    def tls(self) -> bool:
        return bool(self.tls_certfile)


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
    # Recovery (docs/reliability.md); `waitroom recover` reads the margin too.
    recovery_ticket_margin: int = setting(
        "WAITROOM_RECOVERY_TICKET_MARGIN",
        10000,
        "Tickets skipped (made holes) when Redis lost joins, past every ticket Kafka knows: "
        "covers joins acknowledged but never relayed, so no ticket is handed out twice. At "
        "least the joins per second times the seconds Redis may lose.",
        minimum=0,
    )
    recovery_auto: bool = setting(
        "WAITROOM_RECOVERY_AUTO",
        True,
        "Rebuild an owned event from Kafka at once when Redis is behind it; off: keep it "
        "paused until `waitroom recover`.",
    )
    recovery_rebuild_missing: bool = setting(
        "WAITROOM_RECOVERY_REBUILD_MISSING",
        False,
        "Also rebuild events Redis lost entirely (it restarted empty); off: report them and "
        "wait for `waitroom recover --all`.",
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
    replay_seconds: float = setting(
        "WAITROOM_CONSUMER_REPLAY_SECONDS",
        60.0,
        "When Redis turns out to be another server (restarted, or a replica promoted), apply "
        "again the outcomes this replica applied in the last this many seconds: the new server "
        "may lack them (s; 0: never).",
        minimum=0,
    )
    replica_id: str = setting(
        "WAITROOM_CONSUMER_REPLICA_ID",
        "",
        "This replica's name in heartbeats (`waitroom consumer check`); empty: hostname-pid.",
    )


# --- Replacing the old service in place: topics, asymmetric tokens, the event service --------


@dataclass(frozen=True)
class KafkaTopicSettings:
    """Whether processes may create missing topics (``waitroom kafka create-topics`` always may)."""

    auto_create: bool = setting(
        "WAITROOM_KAFKA_AUTO_CREATE_TOPICS",
        False,
        "Let processes create missing topics (1 replica); for development and tests only. "
        "Production topics come from `waitroom kafka create-topics`.",
    )


@dataclass(frozen=True)
class TokenKeySettings:
    """Asymmetric checkout tokens: where the signing keys are and where the JWKS is served."""

    key_dir: str = setting(
        "WAITROOM_JWT_KEY_DIR",
        "",
        "Directory of PEM private keys (Ed25519: EdDSA, P-256: ES256) named <kid>.pem, the kid "
        "starting with the key's takeover time (`waitroom token new-key`); set, tokens are "
        "signed with them instead of HS256 and the public keys are published as a JWKS.",
    )
    reload_seconds: float = setting(
        "WAITROOM_JWT_KEY_RELOAD_SECONDS",
        30.0,
        "How often the key directory is re-read, so keys rotate without a restart (s).",
        minimum=1,
    )
    jwks_port: int = setting(
        "WAITROOM_JWKS_PORT",
        0,
        "Port serving /.well-known/jwks.json (the public keys); 0 turns it off.",
        minimum=0,
    )
    jwks_addr: str = setting(
        "WAITROOM_JWKS_ADDR", "0.0.0.0", "Address the JWKS document is served on."
    )


@dataclass(frozen=True)
class EventServiceSettings:
    """The link to TicketBottle's EventService, which configures events nobody created here."""

    addr: str = setting(
        "WAITROOM_EVENT_SERVICE_ADDR",
        "",
        "host:port of TicketBottle's EventService; set, a join for an unknown event configures "
        "it from there. Empty: only `waitroom event create` configures events.",
    )
    timeout_seconds: float = setting(
        "WAITROOM_EVENT_SERVICE_TIMEOUT_SECONDS",
        2.0,
        "Deadline of one question to the event service (s).",
        minimum=0.05,
    )
    cache_seconds: float = setting(
        "WAITROOM_EVENT_SERVICE_CACHE_SECONDS",
        30.0,
        "How long an answer (also 'not allowed') is reused before asking again (s).",
        minimum=0,
    )
    refresh_seconds: float = setting(
        "WAITROOM_EVENT_SERVICE_REFRESH_SECONDS",
        20.0,
        "How often events configured from the event service are re-read (a cancellation "
        "or a changed sale end is applied within this) (s).",
        minimum=1,
    )
    max_concurrent: int = setting(
        "WAITROOM_EVENT_SERVICE_MAX_CONCURRENT",
        100,
        "Users in checkout at once for an event configured from the event service.",
        minimum=1,
    )
    rate: float = setting(
        "WAITROOM_EVENT_SERVICE_RATE",
        10.0,
        "Admission rate (users/s) for an event configured from the event service.",
        minimum=0.001,
    )

    @property
    def enabled(self) -> bool:
        return bool(self.addr.strip())
