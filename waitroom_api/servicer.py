"""``waitroom.v1.WaitroomService``: the RPCs the TicketBottle gateway calls.

Every state change is one Lua script call (``shared.scripts``; joins arriving together share
one, ``coalesce``); this module validates input, calls the script, and renders the answer.
Failures become gRPC statuses in ``errors``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc
from grpc import aio

from shared import metrics
from shared.backoff import Outage
from shared.ids import event_of_session, validate_event_id, validate_id
from shared.proto import waitroom_pb2 as pb
from shared.proto import waitroom_pb2_grpc
from shared.scripts import DrawScripts, LeaveOutcome, RateLimited, Scripts
from shared.sessions import Status
from shared.settings import CommonSettings
from shared.timefmt import format_ms, now_ms
from waitroom_api.coalesce import JoinCoalescer
from waitroom_api.errors import streaming, unary, validate_ip, validate_user_agent
from waitroom_api.eventservice import EventDirectory, EventServiceDown
from waitroom_api.health import SERVICE_NAME, HealthProbe, package_version
from waitroom_api.render import Renderer, estimated_wait_seconds, session_state
from waitroom_api.watcher import Fanout, Stream

log = logging.getLogger(__name__)

Context = aio.ServicerContext[Any, Any]

_LEAVE_MESSAGES = {
    Status.QUEUED: "left the queue",
    Status.READY: "left checkout; the slot is released and the checkout token revoked",
}


class WaitroomServicer(waitroom_pb2_grpc.WaitroomServiceServicer):
    """The contract's service on top of the scripts, the stream fan-out and the health probe."""

    #: Set by the server when WAITROOM_EVENT_SERVICE_ADDR is: configures unknown events.
    events: EventDirectory | None = None

    def __init__(
        self,
        scripts: Scripts,
        fanout: Fanout,
        renderer: Renderer,
        probe: HealthProbe,
        common: CommonSettings,
    ) -> None:
        self.scripts = scripts
        self.draws = DrawScripts(scripts)
        self.joins = JoinCoalescer(scripts)
        self.fanout = fanout
        self.renderer = renderer
        self.probe = probe
        self.common = common
        self.redis_outage = Outage("Redis (API requests)", log)

    @unary
    async def JoinQueue(
        self, request: pb.JoinQueueRequest, context: Context
    ) -> pb.JoinQueueResponse:
        user_id = validate_id("user_id", request.user_id)
        event_id = validate_event_id(request.event_id)
        # Checked so junk is refused before any script runs (a long user agent is cut, not
        # refused); the join script's record has no place for either yet.
        validate_user_agent(request.user_agent)
        ip_address = validate_ip(request.ip_address)
        if self.events is not None:  # an event nobody configured is asked of the event service
            try:
                await self.events.ensure(event_id, user_id)
            except EventServiceDown as exc:
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        try:
            # Batched with the other joins of this event arriving now: one round trip for all.
            joined = await self.joins.join(event_id, user_id, ip_address)
        except RateLimited as exc:
            # Only a configured event has limits, so the label is never made up; never the
            # address itself (a botnet would make a series per address).
            metrics.JOINS_REFUSED.labels(event_id, exc.limit).inc()
            raise
        # Only a configured event can create a session, so made-up ids never get a series.
        if joined.created:
            metrics.JOINS.labels(event_id).inc()
        wait = estimated_wait_seconds(
            Status(joined.status),
            joined.position,
            joined.queue_length,
            now_ms(),
            joined.opens_ms,
            joined.rate,
        )
        return pb.JoinQueueResponse(
            session_id=joined.session_id,
            position=joined.position,
            queue_length=joined.queue_length,
            queued_at=format_ms(joined.queued_ms),
            expires_at=format_ms(joined.expires_ms),
            websocket_url=self.renderer.websocket(event_id, joined.session_id),
            estimated_wait_seconds=wait,
            opens_at=format_ms(joined.opens_ms),
        )

    @unary
    async def GetQueueStatus(
        self, request: pb.GetQueueStatusRequest, context: Context
    ) -> pb.QueueStatusResponse:
        session_id = request.session_id
        event_id = event_of_session(session_id)
        result = await self.scripts.status(event_id, [session_id])
        view = result.sessions[0]
        state = session_state(
            event_id, view, result.queue_length, result.now_ms, result.opens_ms, result.rate
        )
        response = self.renderer.queue_status(state)
        if view.touch_due and view.record is not None:
            # Polling counts as presence (idle timeout); written once per quarter timeout.
            await self.draws.touch(event_id, [view.record.ticket])
        return response

    @unary
    async def LeaveQueue(
        self, request: pb.LeaveQueueRequest, context: Context
    ) -> pb.LeaveQueueResponse:
        session_id = request.session_id
        event_id = event_of_session(session_id)
        outcome, status = await self.scripts.leave(event_id, session_id)
        if outcome is LeaveOutcome.LEFT:
            metrics.LEAVES.labels(event_id, "user_left").inc()
            message = _LEAVE_MESSAGES.get(status, "left")
        elif outcome is LeaveOutcome.EXPIRED:
            message = "the session had already expired; it is closed now"
        else:
            message = f"the session had already ended ({status.name}); nothing to do"
        return pb.LeaveQueueResponse(session_id=session_id, message=message)

    # The generated base class types a streaming method as one returning its messages; grpc.aio
    # also serves a coroutine that writes them through the context, which this one does.
    @streaming
    async def StreamQueuePosition(  # type: ignore[override]
        self, request: pb.StreamPositionRequest, context: Context
    ) -> None:
        session_id = request.session_id
        event_id = event_of_session(session_id)
        # Watch first, then read: a change between the two is then caught by the watcher,
        # and the stream drops whichever of the two reads started first.
        with self.fanout.watch(Stream(event_id, session_id, self.renderer)) as stream:
            read_at = time.monotonic_ns()
            result = await self.scripts.status(event_id, [session_id])
            stream.offer(result.sessions[0], result, read_at)
            # Written, not yielded: each yield passed up through the error mapping's and the
            # interceptor's generators (both now wrap the call once, see ``errors.streaming``).
            async for update in stream.updates():
                await context.write(update)

    @unary
    async def HealthCheck(
        self, request: pb.HealthCheckRequest, context: Context
    ) -> pb.HealthCheckResponse:
        components = await self.probe.components()
        serving = components["redis"] == "ok" and not self.probe.draining
        return pb.HealthCheckResponse(
            status="SERVING" if serving else "NOT_SERVING",
            service="waitroom",
            version=package_version(),
            kafka_enabled=self.common.kafka_enabled,
            components=components,
        )

    def __repr__(self) -> str:
        return (
            f"WaitroomServicer({SERVICE_NAME}, {self.fanout!r}, {self.joins!r}, "
            f"{self.redis_outage!r})"
        )
