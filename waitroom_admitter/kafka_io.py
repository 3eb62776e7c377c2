"""Blocking kafka-python calls, kept on one thread and bounded in time."""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class KafkaThread:
    """One daemon thread for every blocking kafka-python call.

    The producer is then only ever used from one thread, and a call stuck on an unreachable
    broker can never keep the process from exiting (a pool thread would be joined at exit).
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="kafka", daemon=True)
        self._thread.start()

    async def call(self, func: Callable[[], T]) -> T:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((func, future))
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            func, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(func())
            except BaseException as exc:  # handed to the awaiting coroutine
                future.set_exception(exc)


def abandon(producer: Any) -> None:
    """Close a producer whose records may be stuck on a broker that went away.

    kafka-python's ``close()`` flushes first, and a flush of stuck records times out and leaves
    the producer half closed (its I/O thread running, its finaliser raising later). Stopping
    the I/O thread without sending fails the stuck records (they are still in the outbox), and
    the close then completes.
    """
    try:
        producer.close(timeout=0)
        return
    except Exception:
        sender = getattr(producer, "_sender", None)
        if sender is None:
            raise
    sender.force_close()
    sender.join(5)
    producer.close(timeout=0)
