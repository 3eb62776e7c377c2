"""The unary-call load generator: several client processes, each an asyncio gRPC client.

Closed loop (``rate`` None): every process keeps ``concurrency`` calls in flight for
``seconds``; the completed calls per second is the saturation throughput. Open loop (``rate``
set): calls start on a fixed schedule whatever the server does, each as its own task, so a
stalled server cannot hold back later calls and hide its queueing (no coordinated omission);
the worst lateness of a start against its schedule is reported.

Processes warm up (connect, a second of calls), meet at a barrier, then measure together; each
reports the CPU it used in the measured window, so the report can say whether the load
generator itself was the bottleneck.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from queue import Empty
from typing import Any

import grpc
from grpc import aio

from shared.proto import waitroom_pb2 as pb
from shared.proto import waitroom_pb2_grpc

JOIN = "join"
STATUS = "status"

#: Open loop: calls in flight per process beyond which a due call is counted late, not sent.
MAX_IN_FLIGHT = 2000

#: Each channel its own connection, so SO_REUSEPORT can spread them over server processes.
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


@dataclass(frozen=True)
class Plan:
    """What each client process does. ``session_ids`` feed STATUS calls (each process takes
    its share); JOIN calls use fresh user ids made from ``prefix``."""

    target: str
    kind: str
    seconds: float
    concurrency: int = 32
    rate: float | None = None  # calls per second per process; None: closed loop
    event_id: str = ""
    prefix: str = "u"
    session_ids: Sequence[str] = ()
    channels: int = 2
    event_ids: Sequence[str] = ()  # JOIN: spread the calls over these events, in turn
    warmup: float = 1.0


@dataclass
class WorkerResult:
    done: int = 0
    errors: int = 0
    late: int = 0
    lateness: float = 0.0  # open loop: worst delay of a call's start after its schedule
    cpu: float = 0.0
    seconds: float = 0.0
    latencies: array[float] = field(default_factory=lambda: array("d"))
    first_error: str = ""


@dataclass
class LoadResult:
    """The processes' results added up."""

    processes: int
    done: int
    errors: int
    late: int
    seconds: float
    lateness: float
    client_cpu: float  # CPU seconds per second, all client processes together
    latencies: list[float]  # seconds, sorted
    first_error: str

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """``p`` in 0..100 of the call latencies, in milliseconds (0 with no calls)."""
        return percentile(self.latencies, p) * 1000


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not ordered:
        return 0.0
    rank = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


class _Caller:
    """Makes one kind of call with fresh arguments each time."""

    def __init__(self, plan: Plan, worker: int, stubs: list[Any]) -> None:
        self.plan = plan
        self.worker = worker
        self.stubs = stubs
        self.count = 0
        mine = list(plan.session_ids)
        random.Random(worker).shuffle(mine)
        self.session_ids = mine

    async def call(self) -> None:
        self.count += 1
        stub = self.stubs[self.count % len(self.stubs)]
        if self.plan.kind == JOIN:
            user = f"{self.plan.prefix}{self.worker}-{self.count}"
            events = self.plan.event_ids
            request = pb.JoinQueueRequest(
                user_id=user,
                event_id=events[self.count % len(events)] if events else self.plan.event_id,
                user_agent="bench/1.0",
                ip_address="127.0.0.1",
            )
            await stub.JoinQueue(request, timeout=30)
        else:
            sid = self.session_ids[self.count % len(self.session_ids)]
            await stub.GetQueueStatus(pb.GetQueueStatusRequest(session_id=sid), timeout=30)


async def _closed(caller: _Caller, plan: Plan, until: float, out: WorkerResult) -> None:
    async def one() -> None:
        while time.perf_counter() < until:
            started = time.perf_counter()
            try:
                await caller.call()
            except grpc.RpcError as exc:
                out.errors += 1
                out.first_error = out.first_error or repr(exc)
                continue
            out.latencies.append(time.perf_counter() - started)
            out.done += 1

    await asyncio.gather(*(one() for _ in range(plan.concurrency)))


async def _open(caller: _Caller, rate: float, until: float, out: WorkerResult) -> None:
    interval = 1.0 / rate
    tasks: set[asyncio.Task[None]] = set()

    async def one(due: float) -> None:
        # Timed from the send, not from ``due``: the client's own timer lateness (up to a
        # millisecond on an idle loop) is not the server's. A stalled server cannot delay later
        # sends anyway, since each call is its own task.
        started = time.perf_counter()
        out.lateness = max(out.lateness, started - due)
        try:
            await caller.call()
        except grpc.RpcError as exc:
            out.errors += 1
            out.first_error = out.first_error or repr(exc)
            return
        out.latencies.append(time.perf_counter() - started)
        out.done += 1

    due = time.perf_counter()
    while due < until:
        now = time.perf_counter()
        if due > now:
            await asyncio.sleep(due - now)
        while due <= time.perf_counter() and due < until:
            if len(tasks) >= MAX_IN_FLIGHT:
                out.late += 1
            else:
                task = asyncio.create_task(one(due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            due += interval
    if tasks:
        await asyncio.wait(tasks, timeout=30)


async def _work(plan: Plan, worker: int, ready: Any, go: Any) -> WorkerResult:
    channels = [
        aio.insecure_channel(plan.target, options=CHANNEL_OPTIONS) for _ in range(plan.channels)
    ]
    try:
        for ch in channels:
            await asyncio.wait_for(ch.channel_ready(), 15)
        stubs = [waitroom_pb2_grpc.WaitroomServiceStub(ch) for ch in channels]
        caller = _Caller(plan, worker, stubs)
        warm = WorkerResult()
        await _run(caller, plan, time.perf_counter() + plan.warmup, warm)
        ready.put((worker, None))
        # Blocks this process's loop, which is idle by now.
        if not go.wait(120):
            raise TimeoutError("the benchmark never started the measured window")
        out = WorkerResult()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await _run(caller, plan, wall0 + plan.seconds, out)
        out.cpu = time.process_time() - cpu0
        out.seconds = time.perf_counter() - wall0
        out.first_error = out.first_error or warm.first_error
        return out
    finally:
        for ch in channels:
            await ch.close()


async def _run(caller: _Caller, plan: Plan, until: float, out: WorkerResult) -> None:
    if plan.rate is None:
        await _closed(caller, plan, until, out)
    else:
        await _open(caller, plan.rate, until, out)


def _worker(plan: Plan, worker: int, ready: Any, go: Any, results: Any) -> None:
    try:
        results.put((worker, asyncio.run(_work(plan, worker, ready, go))))
    except BaseException as exc:
        ready.put((worker, exc))
        results.put((worker, exc))


def _gather(queue: Any, procs: list[Any], timeout: float) -> list[Any]:
    """One item from each process, failing fast if one of them died or reported an error."""
    items: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(items) < len(procs):
        try:
            worker, item = queue.get(timeout=0.5)
        except Empty:
            if time.monotonic() > deadline:
                raise TimeoutError(f"client processes silent for {timeout:g}s") from None
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a client process died (exit codes {dead})") from None
            continue
        if isinstance(item, BaseException):
            raise RuntimeError(f"client process {worker} failed: {item!r}") from item
        items.append(item)
    return items


def run(
    plan: Plan, processes: int, during: Callable[[], object] | None = None, timeout: float = 120
) -> LoadResult:
    """Run ``plan`` in ``processes`` client processes; ``during`` is called once all of them
    have warmed up, just as the measured window starts (to start server-side CPU counters)."""
    ctx = multiprocessing.get_context("spawn")  # grpc does not survive fork
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(target=_worker, args=(plan, i, ready, go, results), daemon=True)
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    try:
        _gather(ready, procs, timeout)
        if during is not None:
            during()
        go.set()
        outs: list[WorkerResult] = _gather(results, procs, plan.seconds + timeout)
    finally:
        go.set()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    seconds = max(o.seconds for o in outs)
    latencies = sorted(x for o in outs for x in o.latencies)
    return LoadResult(
        processes=processes,
        done=sum(o.done for o in outs),
        errors=sum(o.errors for o in outs),
        late=sum(o.late for o in outs),
        seconds=seconds,
        lateness=max(o.lateness for o in outs),
        client_cpu=sum(o.cpu for o in outs) / seconds,
        latencies=latencies,
        first_error=next((o.first_error for o in outs if o.first_error), ""),
    )
