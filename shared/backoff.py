"""Riding out Redis and Kafka outages, the same way in every process.

- ``is_transient``: the one rule for whether a failed Redis call is an outage (retry later) or
  a bug (a script error: log it with its traceback, count it, never retry it as an outage).
- ``Outage``: one dependency's outage, logged when it starts and when it ends (not once per
  failed attempt), each failure counted in ``waitroom_dependency_errors_total``.
- ``compute_backoff``: exponential backoff with full jitter.
- ``pause``: a sleep that ends early when the process is asked to stop.
- ``bug``: logging and counting a failure that is ours, not a dependency's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared import metrics

#: Error replies Redis gives while it cannot serve for a while: loading its data set, running a
#: long script, failing over (a replica is read-only, the master is down, too few replicas),
#: migrating slots, or full. A script's own error starts with none of these.
TRANSIENT_REPLIES = (
    "LOADING",
    "BUSY",
    "MASTERDOWN",
    "NOREPLICAS",
    "READONLY",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "OOM",
    # A Redis Cluster slot that moved (MOVED) or is moving (ASK) and the client ran out of
    # redirections to follow: the slot map settles within a reshard or a failover.
    "MOVED",
    "ASK",
)
_TRANSIENT_RESPONSES = (ReadOnlyError, OutOfMemoryError, TryAgainError, ClusterDownError, AskError)
#: Cluster errors that are not replies: redis-py gave up following redirections ("TTL
#: exhausted") or its slot map has a hole during a failover.
_TRANSIENT_CLUSTER = (ClusterError, SlotNotCoveredError)


def is_transient(exc: BaseException) -> bool:
    """Whether a failed Redis call should be retried later rather than treated as a bug.

    True for an unreachable or silent server (connection errors, timeouts, ``OSError``) and for
    the replies of a server that cannot serve right now (``TRANSIENT_REPLIES``). False for
    everything else, notably a ``ResponseError`` raised by a Lua script: retrying a bug forever
    and logging it as "Redis unavailable" hides it.
    """
    # A failure raised while handling a lost connection is part of the same outage: redis-py
    # can answer a server killed under a pub/sub read with asyncio's RuntimeError ("the handler
    # is closed") chained to its ConnectionError (seen in the chaos runs).
    link: BaseException | None = exc
    for _ in range(_CHAIN_LIMIT):
        if link is None:
            return False
        if _transient_itself(link):
            return True
        link = link.__cause__ or link.__context__
    return False


#: How far along ``__cause__``/``__context__`` ``is_transient`` looks.
_CHAIN_LIMIT = 4


def _transient_itself(exc: BaseException) -> bool:
    if isinstance(exc, ResponseError):
        return isinstance(exc, _TRANSIENT_RESPONSES) or str(exc).startswith(TRANSIENT_REPLIES)
    if isinstance(exc, _TRANSIENT_CLUSTER):
        return True
    return isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError)


def compute_backoff(attempt: int, *, base: float = 0.1, cap: float = 5.0) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): exponential, capped, full jitter."""
    return random.uniform(0, min(cap, base * (2 ** min(attempt, 16))))


class Outage:
    """Tracks one dependency's outage so it is logged when it starts and when it ends, not
    once per failed attempt; every failure is counted under ``dependency`` ("redis" or
    "kafka") in ``waitroom_dependency_errors_total``.

    Given the Redis client's connection ``pool``, ``succeeded()`` also drops the idle pooled
    connections when an outage ends: those opened before it are dead, and each would otherwise
    fail once on its next use and look like a new outage.
    """

    def __init__(
        self,
        name: str,
        logger: logging.Logger,
        *,
        dependency: str = "redis",
        pool: Any = None,
    ) -> None:
        self.name = name
        self.logger = logger
        self.dependency = dependency
        self.pool = pool
        self.attempts = 0
        self.outages = 0

    @property
    def down(self) -> bool:
        return self.attempts > 0

    def failed(self, exc: BaseException) -> float:
        """Record a failure; returns how long to wait before trying again."""
        metrics.DEPENDENCY_ERRORS.labels(self.dependency).inc()
        if self.attempts == 0:
            self.outages += 1
            self.logger.warning("%s unavailable, retrying with backoff: %r", self.name, exc)
        delay = compute_backoff(self.attempts)
        self.attempts += 1
        return delay

    def recovered(self) -> bool:
        """Record a success; True when it ended an outage."""
        if not self.attempts:
            return False
        self.logger.warning("%s available again after %d attempts", self.name, self.attempts)
        self.attempts = 0
        return True

    async def succeeded(self) -> None:
        """``recovered()``, then drop the pool's idle connections if an outage just ended."""
        if self.recovered() and self.pool is not None:
            await self.pool.disconnect(inuse_connections=False)

    def __repr__(self) -> str:
        return (
            f"Outage({self.name!r}, down={self.down}, "
            f"attempts={self.attempts}, outages={self.outages})"
        )


def bug(logger: logging.Logger, where: str, exc: BaseException, subject: str = "") -> None:
    """Log a failure of our own (a script error, an unexpected exception) with its traceback
    and count it in ``waitroom_internal_errors_total{where}``.

    ``where`` is a fixed name of the loop or step (it is a metric label); ``subject`` (an event
    id, a session id) goes only into the log line.
    """
    metrics.INTERNAL_ERRORS.labels(where).inc()
    about = f" for {subject}" if subject else ""
    logger.error("%s failed%s: %r", where, about, exc, exc_info=exc)


async def pause(until: asyncio.Event, seconds: float) -> bool:
    """Sleep for ``seconds``, or less if ``until`` (a stop, a wake-up) is set meanwhile;
    returns whether it is set."""
    if seconds > 0 and not until.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await until.wait()
    return until.is_set()
