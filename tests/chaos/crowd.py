"""The crowd of a chaos run: grpc.aio clients that join, then stream or poll until final.

Each user behaves as the gateway does for a browser: join (retrying when the answer did not come
back: the join is idempotent per user while their session lives), then follow the session with
StreamQueuePosition (reconnecting when the stream breaks) or with GetQueueStatus polls, until a
final status; some leave at a random moment. Everything a client saw is kept for the checks: its
acknowledged session, every status change, every token, and every error status.
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

from shared.proto import waitroom_pb2 as pb
from shared.proto.waitroom_pb2_grpc import WaitroomServiceStub
from shared.sessions import Status

#: Answers that mean "try again": the server or the network failed, not the request.
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
#: Answers no client may ever see: a bug or an unhandled failure on the server.
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
CALL_TIMEOUT = 10.0


@dataclass
class Client:
    """One user and what they saw."""

    user_id: str
    stream: bool
    leave_after: float | None
    session_id: str = ""
    acked_at: float = 0.0
    statuses: list[tuple[float, int]] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    codes: Counter[str] = field(default_factory=Counter)
    forbidden: list[str] = field(default_factory=list)
    calls: int = 0
    left: bool = False
    gave_up: str = ""

    @property
    def status(self) -> int:
        return self.statuses[-1][1] if self.statuses else 0

    @property
    def final(self) -> bool:
        return Status(self.status).terminal if self.status else False

    @property
    def ready_periods(self) -> int:
        """How many times this client saw its session become READY."""
        return sum(1 for _, s in self.statuses if s == Status.READY)

    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "session_id": self.session_id,
            "stream": self.stream,
            "acked_at": round(self.acked_at, 3),
            "statuses": [[round(t, 3), Status(s).name] for t, s in self.statuses],
            "codes": dict(self.codes),
            "forbidden": self.forbidden,
            "left": self.left,
            "gave_up": self.gave_up,
        }


class GiveUp(Exception):
    """The client stops: a refusal that retrying cannot change, or patience ran out."""


class Crowd:
    """Runs every client against one API address through a small pool of channels."""

    def __init__(
        self,
        address: str,
        event_id: str,
        users: int,
        seed: int,
        *,
        arrival_seconds: float,
        not_found_patience: float,
        channels: int = 8,
    ) -> None:
        rng = random.Random(seed)
        self.address = address
        self.event_id = event_id
        self.arrival_seconds = arrival_seconds
        self.not_found_patience = not_found_patience
        self.channel_count = channels
        self.started = time.monotonic()
        self.clients = [
            Client(
                f"user-{i}",
                stream=rng.random() < 0.7,
                leave_after=rng.uniform(0.2, 4.0) if rng.random() < 0.1 else None,
            )
            for i in range(users)
        ]
        self.arrivals = sorted(rng.uniform(0, arrival_seconds) for _ in range(users))
        self._rng = rng
        self._stubs: list[WaitroomServiceStub] = []
        self._channels: list[aio.Channel] = []

    def now(self) -> float:
        return time.monotonic() - self.started

    async def run(self, stop: asyncio.Event) -> None:
        """Run every client until it is final, gives up, or ``stop`` is set."""
        self._channels = [aio.insecure_channel(self.address) for _ in range(self.channel_count)]
        self._stubs = [WaitroomServiceStub(ch) for ch in self._channels]
        self.started = time.monotonic()
        try:
            tasks = [
                asyncio.create_task(self._client(i, c, at))
                for i, (c, at) in enumerate(zip(self.clients, self.arrivals, strict=True))
            ]
            stopper = asyncio.create_task(stop.wait())
            waiters: set[asyncio.Future[Any]] = {asyncio.gather(*tasks), stopper}
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            stopper.cancel()
            await asyncio.gather(*tasks, stopper, return_exceptions=True)
        finally:
            for channel in self._channels:
                await channel.close()

    async def _client(self, index: int, client: Client, arrival: float) -> None:
        await asyncio.sleep(arrival)
        stub = self._stubs[index % len(self._stubs)]
        try:
            await self._join(stub, client)
            leaving = None
            if client.leave_after is not None:
                leaving = asyncio.create_task(self._leave(stub, client))
            try:
                if client.stream:
                    await self._follow_stream(stub, client)
                else:
                    await self._poll(stub, client)
            finally:
                if leaving is not None:
                    leaving.cancel()
        except GiveUp as exc:
            client.gave_up = str(exc)

    async def _call(self, client: Client, what: str, call: Any) -> Any:
        """Make a unary call, retrying what deserves a retry; NOT_FOUND is retried for the
        patience (a store being restored answers it for a while)."""
        not_found_since: float | None = None
        delay = 0.05
        while True:
            client.calls += 1
            try:
                return await call()
            except aio.AioRpcError as exc:
                code = exc.code()
                self._note(client, code, exc.details() or "")
                if code == grpc.StatusCode.NOT_FOUND:
                    not_found_since = not_found_since or time.monotonic()
                    if time.monotonic() - not_found_since > self.not_found_patience:
                        raise GiveUp(f"{what}: NOT_FOUND: {exc.details()}") from None
                elif code not in RETRYABLE:
                    raise GiveUp(f"{what}: {code.name}: {exc.details()}") from None
            await asyncio.sleep(delay * self._rng.uniform(0.5, 1.5))
            delay = min(delay * 2, 1.0)

    def _note(self, client: Client, code: grpc.StatusCode, details: str) -> None:
        client.codes[code.name] += 1
        if code in FORBIDDEN:
            client.forbidden.append(f"{code.name}: {details}"[:300])

    def _saw(self, client: Client, status: int, token: str) -> None:
        if status != client.status:
            client.statuses.append((self.now(), status))
        if token:
            client.tokens.add(token)

    async def _join(self, stub: WaitroomServiceStub, client: Client) -> None:
        request = pb.JoinQueueRequest(
            user_id=client.user_id, event_id=self.event_id, ip_address="192.0.2.7"
        )
        reply = await self._call(
            client, "join", lambda: stub.JoinQueue(request, timeout=CALL_TIMEOUT)
        )
        client.session_id = reply.session_id
        client.acked_at = self.now()
        self._saw(client, Status.QUEUED if reply.position else Status.READY, "")

    async def _leave(self, stub: WaitroomServiceStub, client: Client) -> None:
        assert client.leave_after is not None
        await asyncio.sleep(client.leave_after)
        if client.final:
            return
        request = pb.LeaveQueueRequest(session_id=client.session_id)
        await self._call(client, "leave", lambda: stub.LeaveQueue(request, timeout=CALL_TIMEOUT))
        client.left = True

    async def _poll(self, stub: WaitroomServiceStub, client: Client) -> None:
        request = pb.GetQueueStatusRequest(session_id=client.session_id)
        while not client.final:
            reply = await self._call(
                client, "status", lambda: stub.GetQueueStatus(request, timeout=CALL_TIMEOUT)
            )
            self._saw(client, reply.status, reply.checkout_token)
            if not client.final:
                await asyncio.sleep(self._rng.uniform(0.3, 0.8))

    async def _follow_stream(self, stub: WaitroomServiceStub, client: Client) -> None:
        request = pb.StreamPositionRequest(session_id=client.session_id)
        not_found_since: float | None = None
        while not client.final:
            client.calls += 1
            # The stubs are typed for the blocking API; on an aio channel the call is an
            # async iterator.
            call: Any = stub.StreamQueuePosition(request)
            try:
                async for update in call:
                    not_found_since = None
                    self._saw(client, update.status, update.checkout_token)
                    if client.final:
                        call.cancel()
                        return
            except aio.AioRpcError as exc:
                code = exc.code()
                self._note(client, code, exc.details() or "")
                if code == grpc.StatusCode.NOT_FOUND:
                    not_found_since = not_found_since or time.monotonic()
                    if time.monotonic() - not_found_since > self.not_found_patience:
                        raise GiveUp(f"stream: NOT_FOUND: {exc.details()}") from None
                elif code not in RETRYABLE:
                    raise GiveUp(f"stream: {code.name}: {exc.details()}") from None
            # The stream ended (the API drained or died): reconnect, as the gateway does.
            await asyncio.sleep(self._rng.uniform(0.05, 0.3))

    def progress(self) -> dict[str, int]:
        """Counts for the live progress line."""
        acked = sum(1 for c in self.clients if c.session_id)
        ready = sum(1 for c in self.clients if c.ready_periods)
        final = sum(1 for c in self.clients if c.final)
        gave_up = sum(1 for c in self.clients if c.gave_up)
        return {"joined": acked, "saw_ready": ready, "final": final, "gave_up": gave_up}

    def done(self) -> bool:
        return all(c.final or c.gave_up for c in self.clients)
