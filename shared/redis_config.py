"""How to reach Redis, from the ``WAITROOM_REDIS_*`` settings: the mode (one server, a Redis
Cluster, or a master found through Sentinel), TLS, the ACL user and password, and how many
replicas a write must reach before it counts.

``redis_options`` checks the settings together and turns them into ``RedisOptions``; a
combination that cannot work raises ``SettingsError`` naming the variable. Secrets are read
here, from the environment or a file, and never appear in a repr or a log line (``where``).
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from shared.settings import CommonSettings, SettingsError, redact_url


class Mode(enum.StrEnum):
    STANDALONE = "standalone"
    CLUSTER = "cluster"
    SENTINEL = "sentinel"


@dataclass(frozen=True)
class Durability:
    """How many replicas must hold a write before it is answered (``WAIT replicas timeout``);
    ``replicas`` 0 means do not wait."""

    replicas: int = 0
    timeout_ms: int = 500

    @property
    def on(self) -> bool:
        return self.replicas > 0


#: Connection options every mode shares. The timeouts are the single-server client's of
#: before: a dead server is noticed within seconds, and a pooled connection idle for 15 s is
#: checked before use.
BASE_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": 2,
    "socket_timeout": 10,
    "health_check_interval": 15,
    "decode_responses": False,
}


@dataclass(frozen=True)
class RedisOptions:
    """Everything needed to build a client; ``connection`` holds secrets (no repr)."""

    mode: Mode
    url: str
    #: (host, port) of the nodes to start from: cluster seeds, or the Sentinels.
    seeds: list[tuple[str, int]]
    master_name: str
    durability: Durability
    connection: dict[str, Any] = field(repr=False)
    sentinel_connection: dict[str, Any] = field(repr=False)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "rediss"

    @property
    def where(self) -> str:
        """The deployment in words, without any secret: for log lines and error messages."""
        if self.mode is Mode.SENTINEL:
            sentinels = ",".join(f"{h}:{p}" for h, p in self.seeds)
            return f"Redis master {self.master_name!r} via Sentinels {sentinels}"
        address = redact_url(self.url)  # the URL as given, never its password
        return f"Redis Cluster at {address}" if self.mode is Mode.CLUSTER else f"Redis at {address}"


def _addresses(name: str, raw: str) -> list[tuple[str, int]]:
    found = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(f"{name}={raw!r}: each entry must be host:port")
        found.append((host.strip("[]"), int(port)))
    return found


def _readable(name: str, path: str) -> None:
    if path and not os.access(path, os.R_OK):
        raise SettingsError(f"{name}={path!r}: no readable file there")


def _tls(settings: CommonSettings, tls: bool) -> dict[str, Any]:
    files = {
        "WAITROOM_REDIS_TLS_CA_FILE": settings.redis_tls_ca_file,
        "WAITROOM_REDIS_TLS_CERT_FILE": settings.redis_tls_cert_file,
        "WAITROOM_REDIS_TLS_KEY_FILE": settings.redis_tls_key_file,
    }
    for name, path in files.items():
        if path and not tls:
            raise SettingsError(f"{name} is set but WAITROOM_REDIS_URL is not rediss://")
        _readable(name, path)
    if bool(settings.redis_tls_cert_file) != bool(settings.redis_tls_key_file):
        raise SettingsError(
            "WAITROOM_REDIS_TLS_CERT_FILE and WAITROOM_REDIS_TLS_KEY_FILE go together"
        )
    if not tls:
        return {}
    return {
        "ssl": True,
        "ssl_cert_reqs": "required",
        "ssl_ca_certs": settings.redis_tls_ca_file or None,
        "ssl_certfile": settings.redis_tls_cert_file or None,
        "ssl_keyfile": settings.redis_tls_key_file or None,
        "ssl_check_hostname": settings.redis_tls_check_hostname,
    }


def redis_options(settings: CommonSettings) -> RedisOptions:
    """Check the Redis settings together and build the client options from them."""
    try:
        mode = Mode(settings.redis_mode.strip().lower())
    except ValueError:
        raise SettingsError(
            f"WAITROOM_REDIS_MODE={settings.redis_mode!r}: use standalone, cluster or sentinel"
        ) from None
    url = settings.redis_url.strip()
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    except ValueError as exc:  # a bracket left open, a port out of range
        raise SettingsError(f"WAITROOM_REDIS_URL={url!r} is not a URL: {exc}") from None
    if parts.scheme not in ("redis", "rediss"):
        raise SettingsError(f"WAITROOM_REDIS_URL: use redis:// or rediss://, not {parts.scheme}://")
    if parts.password and settings.redis_password:
        raise SettingsError(
            "WAITROOM_REDIS_URL holds a password and WAITROOM_REDIS_PASSWORD(_FILE) is set too: "
            "keep one (the file is best: a URL ends up in logs and process listings)"
        )
    try:
        db = int(parts.path.strip("/") or "0")
    except ValueError:
        raise SettingsError(
            f"WAITROOM_REDIS_URL: {parts.path!r} is not a database number"
        ) from None
    password = settings.redis_password  # from the variable or its _FILE (settings.load)
    connection: dict[str, Any] = {
        **BASE_OPTIONS,
        "username": settings.redis_username or unquote(parts.username or "") or None,
        "password": password or unquote(parts.password or "") or None,
        **_tls(settings, parts.scheme == "rediss"),
    }
    seeds: list[tuple[str, int]] = []
    sentinel_connection: dict[str, Any] = {}
    if mode is Mode.CLUSTER:
        if db != 0:
            raise SettingsError("WAITROOM_REDIS_URL: a Redis Cluster has only database 0")
        seeds = [(host, port)]
        seeds += _addresses("WAITROOM_REDIS_CLUSTER_NODES", settings.redis_cluster_nodes)
    elif mode is Mode.SENTINEL:
        seeds = _addresses("WAITROOM_REDIS_SENTINELS", settings.redis_sentinels)
        if not seeds:
            raise SettingsError("WAITROOM_REDIS_MODE=sentinel needs WAITROOM_REDIS_SENTINELS")
        if not settings.redis_master_name.strip():
            raise SettingsError("WAITROOM_REDIS_MODE=sentinel needs WAITROOM_REDIS_MASTER_NAME")
        connection["db"] = db
        sentinel_password = settings.redis_sentinel_password
        sentinel_connection = {
            **BASE_OPTIONS,
            "username": settings.redis_sentinel_username or None,
            "password": sentinel_password or None,
            **_tls(settings, parts.scheme == "rediss"),
        }
    else:
        connection.update(host=host, port=port, db=db)
    return RedisOptions(
        mode=mode,
        url=url,
        seeds=seeds,
        master_name=settings.redis_master_name.strip(),
        durability=Durability(settings.redis_wait_replicas, settings.redis_wait_timeout_ms),
        connection=connection,
        sentinel_connection=sentinel_connection,
    )
