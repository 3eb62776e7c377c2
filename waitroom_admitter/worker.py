"""The admitter process: owns events through locks and runs admission and relay for them.

Tasks: the sweep (heartbeat, take and hand over event locks, per-event upkeep), lock renewal,
the wake-up listener, the outbox relay, and one admission loop per owned event. Every Redis or
Kafka failure is retried with backoff inside its loop; nothing but a signal ends the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import random
import time
from dataclasses import dataclass

from shared import heartbeats, keys, metrics, signals
from shared.backoff import Outage, bug, is_transient, pause
from shared.connections import redis_client
from shared.errors import WaitroomError
from shared.events import EventState, EventStore
from shared.pubsub import NotifyListener
from shared.scripts import Scripts
from shared.settings import (
    AdmitterSettings,
    CommonSettings,
    ConsumerSettings,
    KafkaClientSettings,
    TokenKeySettings,
    load,
)
from shared.token import Signer, signer_for
from waitroom_admitter import schedule
from waitroom_admitter.admission import EventWorker
from waitroom_admitter.clock import RedisClock
from waitroom_admitter.guard import RecoveryGuard
from waitroom_admitter.locks import Lock, Locks
from waitroom_admitter.relay import Relay

log = logging.getLogger(__name__)

#: Most finished sessions one purge call forgets; the next sweep continues.
PURGE_LIMIT = 1000
#: Most Redis connections one admitter opens; more concurrent commands wait for one. Thousands
#: of admission loops woken at once (their locks taken in one sweep, a subscription made again)
#: failed with MaxConnectionsError at redis-py's default of 100 and backed off for seconds.
REDIS_CONNECTIONS = 64
#: Long scans over the owned events give the event loop back after this many: a scan of
#: 10,000 in one piece held admissions back for several milliseconds.
YIELD_EVERY = 1000
#: A sweep that sees no reason to (``Admitter._must_list``) reads every event id only every this
#: many sweeps: listing and comparing 10,000 ids held the event loop about 9 ms a sweep.
LIST_EVERY = 10
#: Heartbeats older than this are deleted by any replica: the replica is long gone.
PRUNE_AFTER_SECONDS = 3600.0

_EVENT_GAUGES = (
    metrics.QUEUE_LENGTH,
    metrics.CHECKOUT_USERS,
    metrics.CHECKOUT_CAPACITY,
    metrics.EVENT_PAUSED,
    metrics.OUTBOX_BACKLOG,
)


@dataclass
class Owned:
    """An event this replica holds the lock of, and the loop admitting for it."""

    lock: Lock
    worker: EventWorker
    task: asyncio.Task[None]


class Admitter:
    """One admitter replica. ``run()`` returns once stopped and drained."""

    def __init__(
        self,
        common: CommonSettings,
        tuning: KafkaClientSettings,
        settings: AdmitterSettings,
        *,
        replica_id: str = "",
        dead_letter_topic: str = "",
        signer: Signer | None = None,
    ) -> None:
        self.common = common
        self.tuning = tuning
        self.settings = settings
        self.replica_id = replica_id or heartbeats.default_replica_id()
        self.redis = redis_client(common, max_connections=REDIS_CONNECTIONS)
        self.scripts = Scripts(self.redis)
        self.store = EventStore(self.redis, self.scripts)
        self.locks = Locks(self.scripts, settings.lock_ttl_ms, self.replica_id)
        self.clock = RedisClock()
        self.redis_outage = Outage("Redis", log, pool=self.redis.connection_pool)
        self.guard = RecoveryGuard(
            self.scripts,
            common,
            tuning,
            settings,
            # The checkout topics' names, which recovery reads.
            load(ConsumerSettings),
            on_verified=self._on_notify,
        )
        self.relay: Relay | None = None
        if common.kafka_enabled:
            self.relay = Relay(
                self.redis,
                common,
                tuning,
                batch=settings.outbox_batch,
                client_id=f"waitroom-admitter-{self.replica_id}",
                owned=lambda: self.owned.keys(),
                redis_outage=self.redis_outage,
                dead_letter_topic=dead_letter_topic or ConsumerSettings().dlq_topic,
                signer=signer or signer_for(common, load(TokenKeySettings)),
                guard=self.guard,
            )
        self.wakeups = NotifyListener(
            self.redis,
            on_event=self._on_notify,
            on_resubscribe=self._on_resubscribe,
            outage=Outage("Redis pub/sub (wake-ups)", log),
            logger=log,
        )
        self.owned: dict[str, Owned] = {}
        self.stopping = asyncio.Event()
        self._retiring: set[asyncio.Task[None]] = set()
        self._past_admitted = 0
        self.sweeps = 0
        self.purged = 0
        # Loop time of each idle event's next upkeep; an event not listed is due every sweep.
        self._idle_until: dict[str, float] = {}
        # The events this replica should own; idle waits are sized by it from the first sweep,
        # while the locks are still being taken.
        self._share = 0
        # How many event ids the last full listing found, and whether an event this replica
        # does not own was announced since (see _must_list).
        self._listed = -1
        self._unowned_news = False

    @property
    def admitted(self) -> int:
        return self._past_admitted + sum(o.worker.admitted for o in self.owned.values())

    def stop(self) -> None:
        """Stop taking new work; ``run()`` then drains and returns."""
        if not self.stopping.is_set():
            log.info("admitter %s stopping", self.replica_id)
            self.stopping.set()

    async def run(self, *, handle_signals: bool = False) -> None:
        remove_signals = signals.install(lambda _: self.stop(), log) if handle_signals else None
        log.info(
            "admitter %s starting (kafka %s)",
            self.replica_id,
            "on" if self.relay else "off: outbox only",
        )
        sweep = asyncio.create_task(self._sweep_loop(), name="sweep")
        renew = asyncio.create_task(self._renew_loop(), name="renew")
        listen = asyncio.create_task(self.wakeups.run(self.stopping), name="wakeups")
        relay = None
        if self.relay is not None:
            relay = asyncio.create_task(self.relay.run(self.stopping), name="relay")
        try:
            await self.stopping.wait()
        finally:
            await self._shutdown(sweep, renew, listen, relay)
            if remove_signals is not None:
                remove_signals()

    async def _shutdown(
        self,
        sweep: asyncio.Task[None],
        renew: asyncio.Task[None],
        listen: asyncio.Task[None],
        relay: asyncio.Task[None] | None,
    ) -> None:
        """Finish the script calls and relay batch in hand, release the locks, and close,
        all within the grace period (a second reserved for releasing)."""
        loop = asyncio.get_running_loop()
        grace = self.settings.grace_seconds
        release_at = loop.time() + max(0.0, grace - min(1.0, grace / 4))
        # The sweep first, so no lock is taken after the workers were told to stop.
        await _wait_until([sweep, listen], release_at)
        for owned in self.owned.values():
            owned.worker.stop()
        busy = [o.task for o in self.owned.values()] + list(self._retiring)
        await _wait_until(busy + ([relay] if relay else []), release_at)
        if self.relay is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, release_at - loop.time())):
                    await self.relay.flush(list(self.owned))
        renew.cancel()
        await asyncio.gather(renew, return_exceptions=True)
        try:
            async with asyncio.timeout(max(0.1, loop.time() + grace - release_at)):
                for event_id in list(self.owned):
                    owned = self.owned.pop(event_id)
                    await self.locks.release(owned.lock)
                    self._forget(event_id, owned)
                await heartbeats.remove(self.redis, keys.ADMITTER_HEARTBEATS, self.replica_id)
        except Exception as exc:  # Redis down, or the grace ran out (TimeoutError)
            log.warning("could not release every lock; they run out by themselves: %r", exc)
        await self.guard.close()
        if self.relay is not None:
            await self.relay.close()
        with contextlib.suppress(Exception):  # the connections may be gone already
            await self.redis.aclose()
        log.info("admitter stopped: %r", self)

    # --- the sweep ----------------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                await self._sweep()
                await self.redis_outage.succeeded()
            except Exception as exc:
                if is_transient(exc):
                    await pause(self.stopping, self.redis_outage.failed(exc))
                    continue
                # A bug must not stop the sweep for good; its missing heartbeats would then
                # fail the liveness probe, which is the right outcome if it keeps failing.
                bug(log, "sweep", exc)
            await pause(self.stopping, self.settings.sweep_seconds)

    async def _sweep(self) -> None:
        await self.clock.sync(self.redis)
        report = {
            "events": len(self.owned),
            "admitted": self.admitted,
            "interval": self.settings.sweep_seconds,
            "pid": os.getpid(),
        }
        await heartbeats.write(self.redis, keys.ADMITTER_HEARTBEATS, self.replica_id, report)
        beats = await heartbeats.read(self.redis, keys.ADMITTER_HEARTBEATS)
        await heartbeats.prune(self.redis, keys.ADMITTER_HEARTBEATS, beats, PRUNE_AFTER_SECONDS)
        live = sum(1 for b in beats if b.fresh())
        count = int(await self.redis.scard(keys.EVENTS))
        if self._must_list(count, schedule.fair_share(count, live)):
            self._unowned_news = False
            event_ids = await self.store.list_ids()
            self._listed = len(event_ids)
            await self._rebalance(event_ids, live)
        else:
            await self._rebalance(None, live, count)
        await self.guard.check(list(self.owned))
        now = asyncio.get_running_loop().time()
        for n, event_id in enumerate(list(self.owned)):
            if n % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)  # let admissions run between slices of a long scan
            owned = self.owned.get(event_id)
            if owned is None:
                continue
            if self._idle_until.get(event_id, now) <= now or owned.task.done():
                await self._upkeep(event_id)
        await self._measure_redis()
        self.sweeps += 1

    async def _measure_redis(self) -> None:
        """Redis memory and one PING round trip, for the dashboard: two small reads a sweep."""
        started = time.perf_counter()
        await self.redis.ping()
        metrics.REDIS_PING.set(time.perf_counter() - started)
        memory = await self.redis.info("memory")
        metrics.REDIS_MEMORY.set(int(memory.get("used_memory", 0)))
        metrics.REDIS_MAXMEMORY.set(int(memory.get("maxmemory", 0)))

    def _must_list(self, count: int, share: int) -> bool:
        """Whether this sweep must read every event id: something may have changed what this
        replica should own (the count, an announced event it does not own, fewer owned than
        its share), or the last full look is ``LIST_EVERY`` sweeps old. A deleted event needs
        no listing: its admission loop ends and the upkeep lets it go."""
        return (
            count != self._listed
            or self._unowned_news
            or len(self.owned) < share
            or self.sweeps % LIST_EVERY == 0
        )

    async def _rebalance(
        self, event_ids: list[str] | None, live_replicas: int, count: int = 0
    ) -> None:
        """Let go of deleted events and of more than a fair share; take free events up to it.
        Without ``event_ids`` (this sweep did not list them) only the share of ``count``
        events is kept."""
        if event_ids is not None:
            listed = set(event_ids)
            for event_id in [e for e in self.owned if e not in listed]:
                await self._give_up(event_id)
            count = len(event_ids)
        share = schedule.fair_share(count, live_replicas)
        self._share = share
        if len(self.owned) > share:
            # One per sweep, so the replicas settle without handing events back and forth.
            await self._give_up(next(reversed(self.owned)))
            return
        if event_ids is None:
            return
        free = [e for e in event_ids if e not in self.owned]
        random.shuffle(free)  # replicas sweeping at once try different events first
        wanted = free[: min(share - len(self.owned), schedule.ACQUIRE_PER_SWEEP)]
        if not wanted or self.stopping.is_set():
            return
        taken = await self.locks.acquire_many(wanted)
        for lock in taken:
            if self.stopping.is_set():  # stopped while taking: let the lock go at once
                await self.locks.release(lock)
            else:
                self._start(lock.event_id, lock)
        if taken:
            # The admission loops live as long as their locks: moved out of the collector's
            # sight, full collections no longer walk them. With 10,000 events a full collection
            # walked 574,000 objects, found nothing, and held the loop 340-356 ms three times a
            # minute (the refill p99's tail, and 0.017 cores). Objects frozen here that later
            # become garbage are freed by reference counting; only cycles among them would stay.
            gc.freeze()

    async def _upkeep(self, event_id: str) -> None:
        owned = self.owned.get(event_id)
        if owned is None:
            return
        if owned.task.done():
            if not owned.task.cancelled() and owned.task.exception() is not None:
                log.error("admission of %s failed", event_id, exc_info=owned.task.exception())
            await self._give_up(event_id)
            return
        with contextlib.suppress(WaitroomError):  # deleted meanwhile: its worker notices
            config = await self.store.get(event_id)
            metrics.CHECKOUT_CAPACITY.labels(event_id).set(config.max_concurrent)
            metrics.EVENT_PAUSED.labels(event_id).set(int(config.state is EventState.PAUSED))
        self.purged += await self.scripts.purge(
            event_id, self.settings.retention_seconds * 1000, PURGE_LIMIT
        )
        backlog = await self.redis.xlen(keys.outbox(event_id))
        metrics.OUTBOX_BACKLOG.labels(event_id).set(backlog)
        if self.relay is not None:
            self.relay.kick(event_id)  # catches records no wake-up announced
        # An idle event (nobody queued or in checkout, nothing to relay, nothing announced
        # since) gets this upkeep every ``schedule.idle_upkeep`` seconds, others every sweep:
        # upkeep every sweep cost 0.3 ms of CPU per idle event per second (100 idle events: the
        # admitter at 0.055 cores, 0.025 with this; `python -m bench events`).
        # Idle: nothing can change here unannounced. A join publishes while checkout has room,
        # leaving and outcomes always do, and admission runs on its own loop, whose last call
        # says whether anyone waits or holds a slot (and which an announcement wakes).
        interval = schedule.idle_upkeep(self._expected())
        worker = owned.worker
        if worker.calls:
            busy = not worker.idle or worker.wake.is_set()
        else:  # its first admit call has not answered yet: look for ourselves
            view = await self.scripts.queue_view(event_id)
            busy = bool(view.queue_length or view.in_checkout)
        if backlog or busy:
            self._idle_until.pop(event_id, None)
        elif event_id not in self._idle_until:
            spread = random.uniform(0.5, 1.0)  # idle events do not come due all in one sweep
            self._idle_until[event_id] = asyncio.get_running_loop().time() + spread * interval
        else:
            self._idle_until[event_id] += interval

    def _expected(self) -> int:
        """How many events this replica owns, or soon will: what idle waits are sized by."""
        return max(len(self.owned), self._share)

    # --- owning events ------------------------------------------------------------------------

    def _start(self, event_id: str, lock: Lock) -> None:
        worker = EventWorker(
            event_id,
            self.scripts,
            batch_size=self.settings.batch_size,
            sweep_seconds=self.settings.sweep_seconds,
            clock=self.clock,
            redis_outage=self.redis_outage,
            on_change=self._on_change,
            draw_chunk=self.settings.draw_chunk,
            idle_seconds=lambda: schedule.idle_wait(self._expected()),
        )
        task = asyncio.create_task(worker.run(), name=f"admit:{event_id}")
        self.owned[event_id] = Owned(lock, worker, task)
        metrics.LOCK_OWNED.labels(event_id).set(1)
        log.info("took event %s", event_id)
        self._on_change(event_id)  # relay whatever the previous owner left

    async def _give_up(self, event_id: str) -> None:
        """Stop admitting for the event, then release its lock for another replica."""
        owned = self.owned.pop(event_id, None)
        if owned is None:
            return
        owned.worker.stop()
        await _wait_until([owned.task], asyncio.get_running_loop().time() + 5)
        self._forget(event_id, owned)
        if owned.task.done():
            # Released only once our loop has stopped, so the next owner never overlaps it.
            await self.locks.release(owned.lock)
            log.info("released event %s", event_id)

    def _drop(self, event_id: str) -> None:
        """The lock is no longer ours: stop admitting for the event at once."""
        owned = self.owned.pop(event_id, None)
        if owned is None:
            return
        owned.worker.stop()
        self._retiring.add(owned.task)
        owned.task.add_done_callback(self._retiring.discard)
        self._forget(event_id, owned)
        log.warning("lost the lock of event %s", event_id)

    def _forget(self, event_id: str, owned: Owned) -> None:
        self._past_admitted += owned.worker.admitted
        self._idle_until.pop(event_id, None)
        metrics.LOCK_OWNED.labels(event_id).set(0)
        for gauge in _EVENT_GAUGES:
            # Another replica reports the event now; a stale value here would add up wrong.
            with contextlib.suppress(KeyError):
                gauge.remove(event_id)

    async def _renew_loop(self) -> None:
        interval = schedule.renew_interval(self.settings.lock_ttl_ms)
        while True:
            await asyncio.sleep(interval)
            held = list(self.owned.items())
            try:
                renewed = await self.locks.renew_all([owned.lock for _, owned in held])
            except Exception as exc:
                if is_transient(exc):
                    self.redis_outage.failed(exc)
                else:
                    bug(log, "lock renewal", exc)
                renewed = [not owned.lock.expired() for _, owned in held]
            for (event_id, owned), ours in zip(held, renewed, strict=True):
                if not ours and self.owned.get(event_id) is owned:
                    self._drop(event_id)

    # --- wake-ups -----------------------------------------------------------------------------

    def _on_notify(self, event_id: str) -> None:
        if event_id.endswith(keys.RELAY_ONLY_SUFFIX):  # a join to relay, nobody to admit
            self._on_change(event_id.removesuffix(keys.RELAY_ONLY_SUFFIX))
            return
        owned = self.owned.get(event_id)
        if owned is not None:
            owned.worker.notify()
            self._on_change(event_id)
        else:  # maybe a new event, or one whose owner let it go: look at the next sweep
            self._unowned_news = True

    def _on_resubscribe(self) -> None:
        for event_id in list(self.owned):
            self._on_notify(event_id)

    def _on_change(self, event_id: str) -> None:
        self._idle_until.pop(event_id, None)  # upkeep at the next sweep, and every one after
        if self.relay is not None:
            self.relay.kick(event_id)

    def __repr__(self) -> str:
        return (
            f"Admitter(replica={self.replica_id!r}, events={len(self.owned)}, "
            f"admitted={self.admitted}, sweeps={self.sweeps}, purged={self.purged}, "
            f"{self.locks!r}, {self.relay!r}, {self.wakeups!r}, {self.guard!r})"
        )


async def _wait_until(tasks: list[asyncio.Task[None]], deadline: float) -> None:
    """Wait for the tasks until ``deadline`` (loop time); cancel those still running then."""
    if not tasks:
        return
    timeout = max(0.0, deadline - asyncio.get_running_loop().time())
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
