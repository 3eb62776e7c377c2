"""The join benchmark's baseline: ``WaitroomService`` answering from the request alone.

Built like the API server (``waitroom_api.server``): a ``grpc.aio`` server with the same
options (SO_REUSEPORT, the pending-call limit) and the same metrics interceptor, serving the
same methods with the same message types, so the load generator drives both identically. What
the echo lacks is the waitroom's own work: validation, the Redis round trip, rendering.
``join / echo`` is then the share of the gRPC stack's best that the waitroom keeps.

With ``--redis URL`` each call also makes one Redis round trip (PING) through a client built like
the API's: a second baseline that separates the cost of awaiting I/O inside a gRPC handler from
the waitroom's own work.

Run: ``python -m bench.echo --addr 127.0.0.1:PORT [--redis redis://...]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio
from redis.asyncio import Redis

from shared.cli import run_process
from shared.connections import redis_client
from shared.proto import waitroom_pb2 as pb
from shared.proto import waitroom_pb2_grpc
from shared.settings import ApiSettings, CommonSettings
from waitroom_api.interceptors import MetricsInterceptor
from waitroom_api.server import MAX_PENDING_CALLS

log = logging.getLogger("bench.echo")

_AT = "2026-01-01T00:00:00Z"
STREAM_START = 1_000_000
TICK_SECONDS = 0.1  # the API's default stream_min_interval_seconds


class EchoServicer(waitroom_pb2_grpc.WaitroomServiceServicer):
    """Answers every method with a response of the same shape as the API's, doing no work."""

    def __init__(self, redis: Redis | None = None) -> None:
        self.calls = 0
        self.redis = redis
        self.ticks = 0
        self.streams: set[asyncio.Event] = set()
        self.last_open = 0.0

    async def _round_trip(self) -> None:
        """With ``--redis``: one PING per call, as the API makes one script call per join."""
        if self.redis is not None:
            await self.redis.ping()

    async def JoinQueue(
        self, request: pb.JoinQueueRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.JoinQueueResponse:
        self.calls += 1
        await self._round_trip()
        return pb.JoinQueueResponse(
            # About as long as a real session id (nonce.ticket.base64(event)).
            session_id=f"{request.user_id}.{self.calls}.{request.event_id}",
            position=self.calls,
            queue_length=self.calls,
            queued_at=_AT,
            expires_at=_AT,
        )

    async def GetQueueStatus(
        self, request: pb.GetQueueStatusRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.QueueStatusResponse:
        self.calls += 1
        await self._round_trip()
        return pb.QueueStatusResponse(
            session_id=request.session_id,
            status=pb.SESSION_STATUS_QUEUED,
            position=self.calls,
            queue_length=self.calls,
            queued_at=_AT,
            expires_at=_AT,
        )

    async def LeaveQueue(
        self, request: pb.LeaveQueueRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.LeaveQueueResponse:
        self.calls += 1
        return pb.LeaveQueueResponse(session_id=request.session_id, message="left the queue")

    async def StreamQueuePosition(
        self, request: pb.StreamPositionRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.PositionUpdate]:
        """A new position on every tick (see ``tick``), for as long as the client listens."""
        self.calls += 1
        wake = asyncio.Event()
        wake.set()
        self.streams.add(wake)
        self.last_open = time.monotonic()
        try:
            while True:
                await wake.wait()
                wake.clear()
                yield pb.PositionUpdate(
                    session_id=request.session_id,
                    position=max(1, STREAM_START - self.ticks),
                    queue_length=max(1, STREAM_START - self.ticks),
                    status=pb.SESSION_STATUS_QUEUED,
                    updated_at=_AT,
                )
        finally:
            self.streams.discard(wake)

    async def tick(self) -> None:
        """Move every open stream on, as often as the API's watcher may (every 0.1 s at most),
        or as soon as the previous pass is done when a pass takes longer: the most position
        updates this gRPC setup can push, with no work behind them.

        Ticks wait while streams are still opening (until none opened for a second): passes
        back to back leave grpc.aio too little of the loop to accept new calls, so a burst of
        opens would trickle in at a few per second.
        """
        while True:
            if time.monotonic() - self.last_open < 1.0:
                await asyncio.sleep(0.1)
                continue
            started = time.monotonic()
            self.ticks += 1
            for wake in self.streams:
                wake.set()
            # The pass is done when every stream has taken its wake-up and sent.
            while any(w.is_set() for w in self.streams):
                await asyncio.sleep(0.005)
            await asyncio.sleep(max(0.0, TICK_SECONDS - (time.monotonic() - started)))

    async def HealthCheck(
        self, request: pb.HealthCheckRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.HealthCheckResponse:
        return pb.HealthCheckResponse(status="SERVING", service="echo")

    def __repr__(self) -> str:
        return f"EchoServicer(calls={self.calls})"


async def serve(addr: str, redis_url: str) -> None:
    # The API server's options (waitroom_api.server.ApiServer), with its defaults.
    server = aio.server(
        interceptors=[MetricsInterceptor()],
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
            ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_CALLS),
        ],
    )
    redis = None
    if redis_url:
        # Built as the API builds its client (shared.connections, same pool size).
        settings = ApiSettings()
        redis = redis_client(
            CommonSettings(redis_url=redis_url), max_connections=settings.redis_connections
        )
    servicer = EchoServicer(redis)
    waitroom_pb2_grpc.add_WaitroomServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port(addr)
    await server.start()
    ticker = asyncio.create_task(servicer.tick())
    log.info("echo listening on port %d", port)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    await stopped.wait()
    ticker.cancel()
    await server.stop(1)
    log.info("echo stopped: %r", servicer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--addr", required=True, help="host:port to listen on")
    parser.add_argument("--redis", default="", help="Redis URL: one PING per call if given")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run_process(serve(args.addr, args.redis))  # on uvloop, as the API runs


if __name__ == "__main__":
    main()
