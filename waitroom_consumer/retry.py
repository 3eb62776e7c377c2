"""Waiting out Redis and Kafka outages without losing the message in hand."""

from __future__ import annotations

import asyncio
import logging

from shared.backoff import Outage, pause

log = logging.getLogger("waitroom.consumer")


class Stopped(Exception):
    """Shutdown was requested while waiting out an outage; the work in hand is abandoned."""


class Retrier:
    """The consumer's two dependencies, and a wait that gives up only on shutdown."""

    def __init__(self, stopping: asyncio.Event) -> None:
        self.stopping = stopping
        self.redis = Outage("Redis", log)
        self.kafka = Outage("Kafka", log, dependency="kafka")

    def __repr__(self) -> str:
        return f"Retrier({self.redis!r}, {self.kafka!r})"

    async def wait(self, outage: Outage, exc: BaseException) -> None:
        """Record a failure and sleep the backoff; raise Stopped if shutdown comes first."""
        if await pause(self.stopping, outage.failed(exc)):
            raise Stopped
