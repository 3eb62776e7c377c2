"""The start-up check every process runs before it starts work: is Redis configured right?

A Redis that refuses us (a wrong password, a certificate that does not match, cluster mode
pointed at a single server or the other way round, Sentinels that do not know the master
name) will refuse us forever: retrying only hides it. So ``check_redis`` turns those into
``Misconfigured``, one line naming the setting to fix, and the process exits with
``RET_CONNECT`` (2). A Redis that is merely down or unreachable is not misconfigured: the
process starts and its loops retry with backoff, as always.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoPermissionError,
    RedisClusterException,
    RedisError,
    ResponseError,
)

from shared.redis_config import Mode, RedisOptions, redis_options
from shared.settings import CommonSettings

log = logging.getLogger(__name__)

_ONCE = Retry(NoBackoff(), 0)

#: How long the whole check may take before we call Redis down and start anyway.
CHECK_SECONDS = 10.0


class Misconfigured(Exception):
    """Redis refused us in a way retrying cannot fix; the message names the setting."""


def _text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) not in text:
        text = f"{text} ({cause})"
    return " ".join(text.split())  # one line, whatever the server or the TLS library said


def _refusal(exc: BaseException, options: RedisOptions, *, sentinel: bool = False) -> str | None:
    """The one-line diagnosis of an error that retrying cannot fix, or None (Redis is down)."""
    text = _text(exc)
    lowered = text.lower()
    password = "WAITROOM_REDIS_SENTINEL_PASSWORD" if sentinel else "WAITROOM_REDIS_PASSWORD"
    user = "WAITROOM_REDIS_SENTINEL_USERNAME" if sentinel else "WAITROOM_REDIS_USERNAME"
    if isinstance(exc, AuthenticationError | AuthorizationError) or any(
        word in lowered for word in ("noauth", "wrongpass", "invalid password", "invalid username")
    ):
        return f"{password} (or _FILE) / {user}: {options.where} refused them: {text}"
    if isinstance(exc, NoPermissionError) or "noperm" in lowered:
        return f"{user}: the ACL user may not run what the waitroom needs: {text}"
    if "certificate verify failed" in lowered or "hostname mismatch" in lowered:
        if "hostname" in lowered or "ip address mismatch" in lowered:
            return (
                f"WAITROOM_REDIS_URL / WAITROOM_REDIS_TLS_CHECK_HOSTNAME: the server certificate "
                f"does not name the host connected to: {text}"
            )
        return (
            f"WAITROOM_REDIS_TLS_CA_FILE: the server's certificate is not signed by that CA: {text}"
        )
    if any(w in lowered for w in ("alert", "wrong version number", "ssl", "eof occurred")):
        return (
            f"WAITROOM_REDIS_TLS_CERT_FILE / WAITROOM_REDIS_TLS_KEY_FILE / WAITROOM_REDIS_URL: "
            f"the TLS handshake with {options.where} failed: {text}"
        )
    if isinstance(exc, RedisClusterException) and "cluster mode is not enabled" in lowered:
        return f"WAITROOM_REDIS_MODE=cluster, but {options.where} is not a cluster node: {text}"
    return None


async def _close(client: Any) -> None:
    try:
        await client.aclose()
    except Exception as exc:  # closing a half-open client must not hide the diagnosis
        log.debug("closing the check's client failed: %r", exc)


async def _check_sentinels(options: RedisOptions) -> None:
    """Some Sentinel must know the master name; a Sentinel that answers but does not know it
    means the name is wrong (Sentinels that cannot be reached mean they are down)."""
    unknown = []
    for host, port in options.seeds:
        # Tried once (see redis_client's ``once``): a missing password must be named, not
        # retried until the check gives up.
        sentinel = Redis(host=host, port=port, **options.sentinel_connection, retry=_ONCE)
        try:
            address = await sentinel.sentinel_get_master_addr_by_name(options.master_name)
        except ResponseError as exc:
            if "unknown command" in str(exc).lower():
                raise Misconfigured(
                    f"WAITROOM_REDIS_SENTINELS: {host}:{port} is not a Sentinel: {exc}"
                ) from None
            reason = _refusal(exc, options, sentinel=True)
            if reason:
                raise Misconfigured(reason) from None
            continue
        except RedisError as exc:
            reason = _refusal(exc, options, sentinel=True)
            if reason:
                raise Misconfigured(reason) from None
            continue
        finally:
            await _close(sentinel)
        if address:
            return
        unknown.append(f"{host}:{port}")
    if unknown:
        raise Misconfigured(
            f"WAITROOM_REDIS_MASTER_NAME={options.master_name!r}: the Sentinels "
            f"{', '.join(unknown)} monitor no master of that name"
        )


async def _check_server(client: Any, options: RedisOptions) -> None:
    await client.ping()
    if options.mode is Mode.CLUSTER:
        return
    info = await client.info("cluster")
    if int(info.get("cluster_enabled", 0)) == 1:
        raise Misconfigured(
            f"WAITROOM_REDIS_MODE={options.mode.value}, but {options.where} is a Redis Cluster "
            "node: set WAITROOM_REDIS_MODE=cluster"
        )


async def check_redis(settings: CommonSettings) -> bool:
    """Check the Redis settings against the servers; True when Redis answered, False when it
    could not be reached (start anyway and retry). Raises ``Misconfigured`` (and
    ``SettingsError`` for settings that cannot work together)."""
    from shared.connections import redis_client

    options = redis_options(settings)
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            if options.mode is Mode.SENTINEL:
                await _check_sentinels(options)
            client = redis_client(settings, once=True)
            try:
                await _check_server(client, options)
            finally:
                await _close(client)
    except Misconfigured:
        raise
    except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
        reason = _refusal(exc, options)
        if reason:
            raise Misconfigured(reason) from None
        log.warning("%s is not reachable yet (%s); starting, and retrying", options.where, exc)
        return False
    return True


def check_at_start(settings: CommonSettings) -> None:
    """``check_redis`` for a process's command: exit 2 with one line on a refusal, 3 on
    settings that cannot work together; carry on when Redis answered or is merely down."""
    from shared.cli import RET_CONNECT, RET_SETTINGS, fail
    from shared.settings import SettingsError

    try:
        asyncio.run(check_redis(settings))
    except SettingsError as exc:
        fail(str(exc), RET_SETTINGS)
    except Misconfigured as exc:
        fail(str(exc), RET_CONNECT)
