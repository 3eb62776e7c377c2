"""Simulated users: each joins, then follows their status like a browser until admitted.

Many users share one asyncio loop and a small pool of gRPC channels (separate TCP connections),
as browsers behind a gateway would share its connections to the API. A poller asks
GetQueueStatus every few seconds; a streamer holds StreamQueuePosition open and reconnects when
it drops, as an EventSource does. A user stops following once READY (they go to checkout) or on
a final status. An abandoning user stops right after joining, as a closed browser tab does:
the waitroom hears nothing more from them.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc import aio

from shared.backoff import compute_backoff, pause
from shared.proto import waitroom_pb2, waitroom_pb2_grpc
from shared.sessions import Status

RPC_TIMEOUT = 10.0
JOIN_ATTEMPTS = 6
# Codes a browser would retry: the service was busy or briefly away, not a refusal. (A gRPC
# server drops calls it cannot take yet as CANCELLED, so that one is retried too.)
_RETRYABLE = {
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}


@dataclass
class UserTrace:
    """What one simulated user did and saw (times are wall-clock seconds)."""

    index: int
    user_id: str
    mode: str  # "poll" or "stream"
    abandons: bool = False  # stops following right after joining
    join_sent: float = 0.0
    session_id: str = ""
    join_error: str = ""
    estimate_s: int | None = None  # estimated_wait_seconds of the JoinQueueResponse
    ready_at: float | None = None  # when this user first saw READY
    last_status: int = 0
    done: bool = False  # stopped following (READY, final status, or the run ended)

    @property
    def settled(self) -> bool:
        """Saw READY or a final status: the waitroom told them how it ended."""
        return self.ready_at is not None or Status(self.last_status).terminal


@dataclass
class CrowdStats:
    """Measurements across all users (latencies in milliseconds)."""

    join_ms: list[float] = field(default_factory=list)
    status_ms: list[float] = field(default_factory=list)
    stream_first_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    joined: int = 0
    ready: int = 0
    reconnects: int = 0
    stream_updates: int = 0


def _code(exc: aio.AioRpcError) -> str:
    details = exc.details() or ""
    prefix = details[:6] if details.startswith("WTR") else ""
    return f"{exc.code().name} {prefix}".strip()


class Crowd:
    """The simulated users of one run, sharing ``channels`` connections to ``target``."""

    def __init__(
        self,
        target: str,
        event_id: str,
        *,
        poll_interval: float,
        channels: int,
        rng: random.Random,
    ) -> None:
        self.target = target
        self.event_id = event_id
        self.poll_interval = poll_interval
        self.rng = rng
        self.stats = CrowdStats()
        self.stopping = asyncio.Event()
        self.sessions: dict[str, UserTrace] = {}  # session id -> its user, once joined
        self._streams: set[Any] = set()  # open StreamQueuePosition calls
        self._channels = [
            # A local subchannel pool gives each channel its own TCP connection.
            aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(max(1, channels))
        ]
        self._stubs: list[Any] = [waitroom_pb2_grpc.WaitroomServiceStub(c) for c in self._channels]

    def __repr__(self) -> str:
        s = self.stats
        return f"Crowd(target={self.target!r}, joined={s.joined}, ready={s.ready})"

    async def check(self, timeout: float = 5.0) -> None:
        """Raise ``aio.AioRpcError`` unless the API answers its HealthCheck."""
        await self._stubs[0].HealthCheck(waitroom_pb2.HealthCheckRequest(), timeout=timeout)

    def stop(self) -> None:
        """Make every user stop following: pauses end and open streams are cancelled."""
        self.stopping.set()
        for call in list(self._streams):
            call.cancel()

    def ready_at(self, session_id: str) -> float | None:
        """When the user holding ``session_id`` saw READY (None: not yet, or not ours)."""
        trace = self.sessions.get(session_id)
        return trace.ready_at if trace else None

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def run(self, trace: UserTrace) -> None:
        """Join, then follow until settled or the run stops."""
        stub = self._stubs[trace.index % len(self._stubs)]
        try:
            if await self._join(stub, trace) and not trace.abandons:
                if trace.mode == "stream":
                    await self._stream(stub, trace)
                else:
                    await self._poll(stub, trace)
        finally:
            trace.done = True

    def _observe(self, trace: UserTrace, status: int) -> bool:
        """Record a status; True once the user stops following."""
        trace.last_status = status
        if status == Status.READY and trace.ready_at is None:
            trace.ready_at = time.time()
            self.stats.ready += 1
        return status == Status.READY or Status(status).terminal

    async def _join(self, stub: Any, trace: UserTrace) -> bool:
        request = waitroom_pb2.JoinQueueRequest(
            user_id=trace.user_id,
            event_id=self.event_id,
            user_agent="waitroom-simulate/1",
            ip_address=f"10.{trace.index >> 16 & 255}.{trace.index >> 8 & 255}.{trace.index & 255}",
        )
        trace.join_sent = time.time()
        for attempt in range(JOIN_ATTEMPTS):
            started = time.perf_counter()
            try:
                response = await stub.JoinQueue(request, timeout=RPC_TIMEOUT)
            except aio.AioRpcError as exc:
                code = _code(exc)
                self.stats.errors[f"JoinQueue {code}"] += 1
                if exc.code() not in _RETRYABLE or attempt == JOIN_ATTEMPTS - 1:
                    trace.join_error = code
                    return False
                if await pause(self.stopping, compute_backoff(attempt, base=0.2, cap=3.0)):
                    trace.join_error = code
                    return False
                continue
            self.stats.join_ms.append((time.perf_counter() - started) * 1000)
            self.stats.joined += 1
            trace.session_id = response.session_id
            trace.estimate_s = response.estimated_wait_seconds
            self.sessions[trace.session_id] = trace
            trace.last_status = int(Status.QUEUED)
            # Joining again after admission answers with position 0 (already in checkout); so
            # does a join into a scheduled event's pre-queue ("not drawn yet"), whose opens_at
            # is set: there, following the status tells which it was.
            if response.position == 0 and not response.opens_at:
                self._observe(trace, Status.READY)
            return trace.ready_at is None
        return False

    async def _poll(self, stub: Any, trace: UserTrace) -> None:
        request = waitroom_pb2.GetQueueStatusRequest(session_id=trace.session_id)
        while not await pause(self.stopping, self.poll_interval * self.rng.uniform(0.8, 1.2)):
            started = time.perf_counter()
            try:
                response = await stub.GetQueueStatus(request, timeout=RPC_TIMEOUT)
            except aio.AioRpcError as exc:
                self.stats.errors[f"GetQueueStatus {_code(exc)}"] += 1
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    return  # the session is gone for good; the report shows the user as lost
                continue
            self.stats.status_ms.append((time.perf_counter() - started) * 1000)
            if self._observe(trace, response.status):
                return

    async def _stream(self, stub: Any, trace: UserTrace) -> None:
        request = waitroom_pb2.StreamPositionRequest(session_id=trace.session_id)
        failures = 0
        while not self.stopping.is_set():
            call = stub.StreamQueuePosition(request)
            self._streams.add(call)
            started = time.perf_counter()
            first = True
            try:
                async for update in call:
                    self.stats.stream_updates += 1
                    if first:
                        self.stats.stream_first_ms.append((time.perf_counter() - started) * 1000)
                        first = False
                    failures = 0
                    if self._observe(trace, update.status):
                        return
                # The server ended the stream early: reconnect, as a browser's EventSource does.
            except asyncio.CancelledError:
                if self.stopping.is_set():
                    return  # `stop` cancelled the call
                raise
            except aio.AioRpcError as exc:
                self.stats.errors[f"StreamQueuePosition {_code(exc)}"] += 1
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    return
            finally:
                self._streams.discard(call)
                call.cancel()
            self.stats.reconnects += 1
            failures += 1
            if await pause(self.stopping, compute_backoff(failures, base=0.2, cap=3.0)):
                return
