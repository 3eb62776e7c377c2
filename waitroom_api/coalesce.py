"""Coalesced joins: the JoinQueue calls of one event that arrive together become one script call.

A lone join costs one Redis round trip inside a grpc.aio handler, and in this runtime that round
trip (the socket's readiness, the reply's future, the task's wake-up) costs as much CPU as the
whole gRPC call: an echo server with one Redis PING per call answers half as many calls as the
bare echo (docs/benchmarks.md, "Join throughput"). Here the joins that reach the process while
one event's previous batch is in flight, or within the loop turn that starts a batch, go to
Redis together (``shared.scripts.join_batch``): one round trip and one script run for all of
them, and each caller still gets exactly what its own join would have answered.

Per event at most one batch is in flight, so the batches of one event reach Redis in the order
their callers arrived and tickets follow that order. An idle process sends a lone join at the
next loop turn. A busy one (a batch left within the last ``BUSY_SECONDS``) first gathers for
``GATHER_SECONDS``: grpc hands the loop about one call per turn and Redis answers a batch in a
fraction of a millisecond, so without that pause batches stayed at 1.1-2 joins under full load
and the coalescing saved nothing (0.33 ms of API CPU per join, 0.38 of the echo's rate); with
it they hold about 6 at 5,500 joins/s (0.22 ms, 0.77 of the echo; docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio

from shared.scripts import JoinRequest, JoinResult, Scripts, join_batch

_Waiter = tuple[JoinRequest, "asyncio.Future[JoinResult]"]

#: A process that sent a batch this recently is busy: its next batch gathers first.
BUSY_SECONDS = 0.01
#: How long a busy process gathers joins before it sends them: a millisecond at most added to
#: a join that already waits its turn behind others.
GATHER_SECONDS = 0.001


class JoinCoalescer:
    """Joins ``Scripts.join`` would make, sent per event in batches (see the module's text)."""

    def __init__(self, scripts: Scripts) -> None:
        self.scripts = scripts
        # An event has a list here exactly while its drain task runs: the joins for the next
        # batch, in arrival order.
        self._pending: dict[str, list[_Waiter]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_sent = float("-inf")  # loop time of the process's last batch, any event
        self.batches = 0
        self.joins = 0

    async def join(self, event_id: str, user_id: str, ip_address: str = "") -> JoinResult:
        """Join ``user_id`` to ``event_id``'s queue, or return their live session.

        Raises what ``Scripts.join`` raises: the refusal (``WaitroomError``, ``RateLimited``)
        this user's join met, or the failure of the batch's call to Redis.
        """
        future: asyncio.Future[JoinResult] = asyncio.get_running_loop().create_future()
        waiting = self._pending.get(event_id)
        if waiting is None:
            waiting = self._pending[event_id] = []
            # The task first runs at the next loop turn, so the joins of this turn go with it.
            task = asyncio.create_task(self._drain(event_id), name=f"joins {event_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        waiting.append((JoinRequest(user_id, ip_address), future))
        return await future

    async def _drain(self, event_id: str) -> None:
        """Send ``event_id``'s pending joins, batch after batch, until none are left."""
        batch: list[_Waiter] = []
        loop = asyncio.get_running_loop()
        try:
            while True:
                if loop.time() - self._last_sent < BUSY_SECONDS:
                    await asyncio.sleep(GATHER_SECONDS)
                # A caller that went away (its deadline passed, it hung up) before its batch
                # left is not joined, as its own join would not have been sent.
                batch = [w for w in self._pending[event_id] if not w[1].done()]
                self._pending[event_id] = []
                if not batch:
                    break
                await self._send(event_id, batch)
        finally:
            left = self._pending.pop(event_id, [])
            for _, future in [*batch, *left]:
                if not future.done():  # only when this task itself was cancelled
                    future.cancel()

    async def _send(self, event_id: str, batch: list[_Waiter]) -> None:
        self.batches += 1
        self.joins += len(batch)
        self._last_sent = asyncio.get_running_loop().time()
        try:
            outcomes = await join_batch(self.scripts, event_id, [r for r, _ in batch])
        except Exception as exc:  # the call failed for all: each caller reports it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def __repr__(self) -> str:
        return (
            f"JoinCoalescer(batches={self.batches}, joins={self.joins}, "
            f"events_in_flight={len(self._pending)})"
        )
