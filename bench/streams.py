"""The stream-holding clients of the fan-out benchmark: many StreamQueuePosition calls per process.

Each process opens its share of the streams over several connections, records every update's
arrival time, position and status, and once told to stop works out, for each admission it is
given, how long each affected stream took to show it: the first update after which the stream's
position says that ticket was admitted (a queued ticket T at position p has seen the first T - p
tickets admitted; a READY one has seen all up to itself).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import multiprocessing
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc import aio

from bench.load import CHANNEL_OPTIONS
from shared.ids import ticket_of_session
from shared.proto import waitroom_pb2 as pb
from shared.proto import waitroom_pb2_grpc

#: Most (admission, stream) pairs each process evaluates; admissions are strided to fit.
MAX_PAIRS = 1_500_000

#: Streams a process opens before waiting for their first updates.
OPEN_BATCH = 500


@dataclass
class Followed:
    ticket: int
    times: array[float] = field(default_factory=lambda: array("d"))
    seen: array[int] = field(default_factory=lambda: array("q"))  # tickets admitted so far


@dataclass
class StreamResult:
    streams: int = 0
    updates: int = 0  # in the measured window
    errors: int = 0
    first_error: str = ""
    cpu: float = 0.0
    seconds: float = 0.0
    latencies: array[float] = field(default_factory=lambda: array("d"))
    missed: int = 0  # admissions a stream never showed


def _seen(ticket: int, update: pb.PositionUpdate) -> int | None:
    if update.status == pb.SESSION_STATUS_QUEUED:
        return ticket - update.position
    if update.status == pb.SESSION_STATUS_READY:
        return ticket
    return None


def latencies(
    streams: Sequence[Followed], admissions: Sequence[tuple[int, float]], out: StreamResult
) -> None:
    """For each (admission, affected stream): arrival of the first update showing it, minus
    the admission time. ``admissions`` are (ticket, seconds) in ticket order."""
    tickets = [a for a, _ in admissions]
    affected = sum(bisect.bisect_right(tickets, s.ticket) for s in streams)
    stride = max(1, -(-affected // MAX_PAIRS))
    sampled = admissions[::stride]
    for stream in streams:
        j = 0
        for ticket, admitted in sampled:
            if ticket > stream.ticket:
                break
            while j < len(stream.seen) and stream.seen[j] < ticket:
                j += 1
            if j == len(stream.seen):
                out.missed += 1
            else:
                out.latencies.append(max(0.0, stream.times[j] - admitted))


async def _follow(stub: Any, stream: Followed, sid: str, counters: StreamResult) -> None:
    try:
        async for update in stub.StreamQueuePosition(pb.StreamPositionRequest(session_id=sid)):
            now = time.time()
            seen = _seen(stream.ticket, update)
            if seen is not None:
                stream.times.append(now)
                stream.seen.append(seen)
            counters.updates += 1
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.CANCELLED:
            counters.errors += 1
            counters.first_error = counters.first_error or repr(exc)


async def _hold(target: str, sids: list[str], channels: int, ctl: Any) -> StreamResult:
    loop = asyncio.get_running_loop()
    chans = [aio.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(channels)]
    stubs = [waitroom_pb2_grpc.WaitroomServiceStub(ch) for ch in chans]
    out = StreamResult(streams=len(sids))
    followed = [Followed(ticket_of_session(sid)) for sid in sids]
    tasks: list[asyncio.Task[None]] = []
    try:
        deadline = time.monotonic() + 120
        # Opened a batch at a time, as reconnecting users would arrive: the point here is the
        # steady fan-out (the API's tests cover a burst of opens, which grpc servers limit with
        # grpc.server.max_pending_requests).
        for start in range(0, len(sids), OPEN_BATCH):
            for i in range(start, min(len(sids), start + OPEN_BATCH)):
                follow = _follow(stubs[i % channels], followed[i], sids[i], out)
                tasks.append(asyncio.create_task(follow))
            while any(not f.seen for f in followed[: len(tasks)]):
                if out.errors:
                    raise RuntimeError(f"a stream failed: {out.first_error}")
                if time.monotonic() > deadline:
                    raise TimeoutError("streams did not all get their first update")
                await asyncio.sleep(0.02)
        ctl.ready.put(None)
        await loop.run_in_executor(None, ctl.go.wait)
        out.updates = 0
        cpu, started = time.process_time(), time.monotonic()
        await loop.run_in_executor(None, ctl.stop.wait)
        out.cpu = time.process_time() - cpu
        out.seconds = time.monotonic() - started
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        for ch in chans:
            await ch.close()
    admissions = await loop.run_in_executor(None, ctl.admissions.get)
    latencies(followed, admissions, out)
    return out


@dataclass
class Control:
    """The queues and events the parent and the stream processes share."""

    ready: Any
    results: Any
    admissions: Any
    go: Any
    stop: Any


def _process(target: str, sids: list[str], channels: int, ctl: Control) -> None:
    try:
        ctl.results.put(asyncio.run(_hold(target, sids, channels, ctl)))
    except BaseException as exc:
        ctl.ready.put(exc)
        ctl.results.put(exc)


class StreamClients:
    """``processes`` client processes sharing ``sids`` between them."""

    def __init__(self, target: str, sids: list[str], processes: int, channels: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.admission_queues = [ctx.Queue() for _ in range(processes)]
        self.ready, self.results = ctx.Queue(), ctx.Queue()
        self.go, self.stop = ctx.Event(), ctx.Event()
        self.procs = []
        for i in range(processes):
            ctl = Control(self.ready, self.results, self.admission_queues[i], self.go, self.stop)
            proc = ctx.Process(
                target=_process, args=(target, sids[i::processes], channels, ctl), daemon=True
            )
            self.procs.append(proc)
            proc.start()

    def _gather(self, queue: Any, timeout: float) -> list[Any]:
        items = []
        for _ in self.procs:
            item = queue.get(timeout=timeout)
            if isinstance(item, BaseException):
                raise RuntimeError(f"a stream process failed: {item!r}") from item
            items.append(item)
        return items

    def wait_ready(self, timeout: float = 180) -> None:
        self._gather(self.ready, timeout)

    def finish(self, admissions: list[tuple[int, float]]) -> list[StreamResult]:
        self.stop.set()
        for q in self.admission_queues:
            q.put(admissions)
        results: list[StreamResult] = self._gather(self.results, 300)
        return results

    def __repr__(self) -> str:
        alive = sum(1 for p in self.procs if p.is_alive())
        return f"StreamClients(processes={len(self.procs)}, alive={alive})"

    def close(self) -> None:
        self.go.set()
        self.stop.set()
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()
