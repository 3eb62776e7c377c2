"""The admission loop of one event this replica owns."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from shared import metrics
from shared.backoff import Outage, bug, is_transient, pause
from shared.scripts import AdmitResult, DrawScripts, Scripts
from waitroom_admitter import schedule
from waitroom_admitter.clock import RedisClock
from waitroom_admitter.draw import DrawRunner

log = logging.getLogger(__name__)


class EventWorker:
    """Calls the admit script for one event as often as it can admit someone, and no more.

    After each call it either goes again at once (a full batch, or the script says tokens and
    room are left) or sleeps until the earliest moment admitting could succeed: the token
    bucket's refill, the first slot lease running out, or the sweep. A wake-up (a slot freed,
    a user joined with room free) cuts the sleep short.

    An idle event (nobody queued, nobody in checkout: ``schedule.idle``) sleeps
    ``idle_seconds()`` instead of the sweep, spread over its second half so thousands of idle
    events do not come due together. Nothing admissible can appear there unannounced: a join
    with room free announces (``join_end``), and a join without room (paused, checkout capped
    at 0, before the draw) is announced by what then makes room: resuming or raising the cap
    (``event_save``, ``event_sync``), the opening (``retry_ms`` ends the wait at it; moving it
    announces), the draw's end (``draw_finish``), a recovery's end (``restore_done``, and the
    guard's ``on_verified``). A lease, a waiting user's expiry or absence make the event not
    idle. A lost subscription wakes every owned event when it is made again.
    """

    def __init__(
        self,
        event_id: str,
        scripts: Scripts,
        *,
        batch_size: int,
        sweep_seconds: float,
        clock: RedisClock,
        redis_outage: Outage,
        on_change: Callable[[str], None],
        draw_chunk: int = 65536,
        idle_seconds: Callable[[], float] = lambda: schedule.IDLE_WAIT_SECONDS,
    ) -> None:
        self.event_id = event_id
        self.scripts = scripts
        self.batch_size = batch_size
        self.sweep_seconds = sweep_seconds
        self.clock = clock
        self.redis_outage = redis_outage
        self.on_change = on_change
        self.idle_seconds = idle_seconds
        #: The last admit call found the event idle (``schedule.idle``).
        self.idle = False
        self.draw = DrawRunner(event_id, DrawScripts(scripts), draw_chunk)
        self.wake = asyncio.Event()
        self.stopping = asyncio.Event()
        self.calls = 0
        self.admitted = 0
        self.expired = 0
        self.reclaimed = 0
        self.wakeups = 0

    def stop(self) -> None:
        """Finish the script call in hand, then return."""
        self.stopping.set()
        self.wake.set()

    def notify(self) -> None:
        """Something changed in the event: admit again now."""
        self.wakeups += 1
        self.wake.set()

    async def run(self) -> None:
        while not self.stopping.is_set():
            # Cleared before the call, so a change announced while the script runs still wakes
            # the next wait.
            self.wake.clear()
            try:
                result = await self.scripts.admit(self.event_id, self.batch_size)
                if result is not None and result.draw_due:
                    # The opening has passed: draw (or finish a dead owner's draw), then admit.
                    if not await self.draw.run(self.stopping):
                        await pause(self.stopping, self.sweep_seconds)
                    self.on_change(self.event_id)  # the reveal is in the outbox
                    continue
            except Exception as exc:
                if is_transient(exc):
                    await pause(self.stopping, self.redis_outage.failed(exc))
                else:  # a script error: retrying at once would only repeat it
                    bug(log, "admission", exc, self.event_id)
                    await pause(self.stopping, self.sweep_seconds)
                continue
            await self.redis_outage.succeeded()
            self.calls += 1
            if result is None:
                # The event was deleted: the sweep sees this task ended and lets the event go.
                log.warning("event %s has no configuration; leaving it", self.event_id)
                return
            self._record(result)
            self.idle = schedule.idle(result)
            if schedule.admit_again_now(result, self.batch_size):
                await asyncio.sleep(0)  # let wake-ups, renewals and the relay run in between
                continue
            idle_seconds = self.idle_seconds() * random.uniform(0.5, 1.0) if self.idle else 0.0
            now_ms = self.clock.now_ms()
            wait = schedule.wait_seconds(result, now_ms, self.sweep_seconds, idle_seconds)
            await pause(self.wake, wait)

    def _record(self, result: AdmitResult) -> None:
        event = self.event_id
        self.admitted += result.admitted
        self.expired += result.expired
        self.reclaimed += result.reclaimed
        if result.admitted:
            metrics.ADMISSIONS.labels(event).inc(result.admitted)
            histogram = metrics.WAIT_SECONDS.labels(event)
            for wait_ms in result.waits_ms:
                histogram.observe(wait_ms / 1000)
        if result.expired:
            metrics.EXPIRATIONS.labels(event, "queue").inc(result.expired)
        if result.reclaimed:
            metrics.EXPIRATIONS.labels(event, "checkout").inc(result.reclaimed)
        if result.abandoned:
            metrics.ABANDONED.labels(event).inc(result.abandoned)
        metrics.QUEUE_LENGTH.labels(event).set(result.queue_length)
        metrics.CHECKOUT_USERS.labels(event).set(result.in_checkout)
        if result.admitted or result.expired or result.reclaimed or result.abandoned:
            self.on_change(event)  # new outbox records: relay them now

    def __repr__(self) -> str:
        return (
            f"EventWorker({self.event_id!r}, calls={self.calls}, admitted={self.admitted}, "
            f"expired={self.expired}, reclaimed={self.reclaimed}, wakeups={self.wakeups})"
        )
