"""Health: the standard ``grpc.health.v1`` service and the contract's HealthCheck components.

The standard service says whether this process takes traffic (SERVING while running,
NOT_SERVING once draining), which is what load balancers and Kubernetes probes ask. The
contract's HealthCheck also reports the dependencies: Redis, which every RPC needs, and Kafka,
which the API never talks to (the admitter relays the outbox) but operators want to see; and
``recovery``: events whose Redis state is being rebuilt from Kafka, or not yet checked against it
after Redis restarted (their joins answer WTR011 meanwhile, docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import functools
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from grpc_health.v1 import health, health_pb2
from redis.asyncio import Redis

from shared import keys
from shared.kafka import KafkaUnreachable, bootstrap_servers, probe_kafka
from shared.proto import waitroom_pb2
from shared.scripts import Scripts
from shared.settings import CommonSettings

#: Full name of the contract's service, as health checks and reflection name it.
SERVICE_NAME = waitroom_pb2.DESCRIPTOR.services_by_name["WaitroomService"].full_name

PROBE_TIMEOUT = 1.0
KAFKA_CACHE_SECONDS = 5.0
RECOVERY_CACHE_SECONDS = 2.0
#: Events the recovery component looks at (one read each); the rest are summed up as "more".
RECOVERY_EVENTS = 200


@functools.cache
def package_version() -> str:
    try:
        return version("ticketbottle-waitroom")
    except PackageNotFoundError:
        return "unknown"


async def standard_health() -> Any:
    """The ``grpc.health.v1.Health`` servicer, SERVING for the server and our service."""
    servicer = health.aio.HealthServicer()
    for name in ("", SERVICE_NAME):
        await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return servicer


class HealthProbe:
    """Checks the dependencies for HealthCheck; the Kafka answer is cached for a few seconds."""

    def __init__(self, redis: Redis, common: CommonSettings) -> None:
        self.redis = redis
        self.common = common
        self.draining = False
        self._kafka: tuple[float, str] | None = None
        self._kafka_lock = asyncio.Lock()
        self.scripts = Scripts(redis)
        self._recovery: tuple[float, str] | None = None
        self._recovery_lock = asyncio.Lock()

    async def redis_status(self) -> str:
        try:
            await asyncio.wait_for(self.redis.ping(), PROBE_TIMEOUT)
        except Exception as exc:
            return f"error: {exc or type(exc).__name__}"
        return "ok"

    async def kafka_status(self) -> str:
        if not self.common.kafka_enabled:
            return "disabled"
        async with self._kafka_lock:  # one probe at a time, however many callers ask
            cached = self._kafka
            if cached is not None and time.monotonic() - cached[0] < KAFKA_CACHE_SECONDS:
                return cached[1]
            try:
                # A thread, as every blocking Kafka check; bounded by PROBE_TIMEOUT per server.
                await asyncio.to_thread(probe_kafka, bootstrap_servers(self.common), PROBE_TIMEOUT)
                answer = "ok"
            except KafkaUnreachable as exc:
                answer = f"unreachable: {exc}"
            self._kafka = (time.monotonic(), answer)
            return answer

    async def recovery_status(self) -> str:
        """ "ok", or the events paused for recovery: "recovering: A, B" (being rebuilt) and
        "unchecked: C" (Redis restarted; an admitter has not compared it with Kafka yet)."""
        async with self._recovery_lock:
            cached = self._recovery
            if cached is not None and time.monotonic() - cached[0] < RECOVERY_CACHE_SECONDS:
                return cached[1]
            try:
                answer = await asyncio.wait_for(self._read_recovery(), PROBE_TIMEOUT * 2)
            except Exception as exc:
                answer = f"error: {exc or type(exc).__name__}"
            self._recovery = (time.monotonic(), answer)
            return answer

    async def _read_recovery(self) -> str:
        scripts = self.scripts
        raw = await self.redis.smembers(keys.EVENTS)
        members = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in raw)
        recovering, unchecked = [], []
        for event_id in members[:RECOVERY_EVENTS]:
            probe = await scripts.restore_probe(event_id)
            if probe.recovery:
                recovering.append(event_id)
            elif probe.generation and not probe.verified:
                unchecked.append(event_id)
        parts = []
        if recovering:
            parts.append(f"recovering: {', '.join(recovering)}")
        if unchecked:
            parts.append(f"unchecked: {', '.join(unchecked)}")
        if len(members) > RECOVERY_EVENTS:
            parts.append(f"{len(members) - RECOVERY_EVENTS} more events not looked at")
        return "; ".join(parts) or "ok"

    async def components(self) -> dict[str, str]:
        redis_answer, kafka_answer, recovery_answer = await asyncio.gather(
            self.redis_status(), self.kafka_status(), self.recovery_status()
        )
        return {"redis": redis_answer, "kafka": kafka_answer, "recovery": recovery_answer}

    def __repr__(self) -> str:
        return f"HealthProbe(draining={self.draining}, kafka={self._kafka})"
