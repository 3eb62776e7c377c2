"""The rehearsal's orchestration: ``Simulation`` runs one sale against a running waitroom.

Users arrive (all at once, or steadily at a rate; with a scheduled opening, some before it),
join through the gRPC API and follow their status, except those who abandon; a stand-in for
the order service answers their admissions over Kafka. Meanwhile Redis is sampled for the queue
length and the users in checkout. At the end the server's session records are read back for the
checks only the server can answer: the join order (tickets) and the draw's places, so FIFO can
be checked exactly, and when each slot was held, so the cap can be checked exactly.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.connections import redis_client
from shared.errors import Refused
from shared.events import EventConfig, EventStore
from shared.scripts import Scripts
from shared.sessions import SessionRecord
from shared.settings import CommonSettings
from waitroom_dev.simulate import opening
from waitroom_dev.simulate.checkout import CheckoutStandIn
from waitroom_dev.simulate.invariants import Sample
from waitroom_dev.simulate.model import DrawOutcome, RunData, SimulationConfig
from waitroom_dev.simulate.progress import Progress, pause_reason, read_gate
from waitroom_dev.simulate.users import Crowd, UserTrace

SAMPLE_SECONDS = 0.02  # cap check: ZCARD of the checkout set every 20 ms
SERIES_SECONDS = 0.25  # one plot point every 250 ms
TRACK_SECONDS = 0.5
STATUS_BATCH = 500


class SimulationError(RuntimeError):
    """The run could not start: the event, the API, Redis or Kafka is missing."""

    def __init__(self, message: str, *, unreachable: bool = True) -> None:
        super().__init__(message)
        self.unreachable = unreachable  # False: reached, but refused (no such event)


class Simulation:
    """One rehearsal; ``progress`` is called every ``progress_seconds`` with a Progress."""

    def __init__(
        self,
        config: SimulationConfig,
        progress: Callable[[Progress], None],
        progress_seconds: float,
    ) -> None:
        self.config = config
        self.progress = progress
        self.progress_seconds = progress_seconds
        self.rng = random.Random(config.seed)
        self.run_id = secrets.token_hex(4)
        self.traces: list[UserTrace] = []
        self.final: dict[str, SessionRecord] = {}  # admitted sessions known to have finished
        self.samples: list[Sample] = []
        self.max_in_checkout = 0
        self.sample_count = 0
        self.redis_errors = 0
        self.in_checkout = 0
        self.queue_length = 0
        self._started = 0.0
        self.opens_ms = 0  # the event's scheduled opening, Redis's clock (0: none ahead)
        self._opens_at = 0.0  # the same instant on this machine's clock
        self._abandoning: set[int] = set()  # indexes of the users who abandon

    def __repr__(self) -> str:
        return (
            f"Simulation(run={self.run_id}, users={len(self.traces)}, "
            f"finished={len(self.final)}, max_in_checkout={self.max_in_checkout})"
        )

    async def run(self) -> RunData:
        config = self.config
        common = CommonSettings(
            redis_url=config.redis_url, kafka_bootstrap_servers=config.bootstrap
        )
        redis = redis_client(common)
        crowd = Crowd(
            config.target,
            config.event_id,
            poll_interval=config.poll_interval,
            channels=config.channels,
            rng=self.rng,
        )
        stand_in = CheckoutStandIn(
            common,
            config.kafka,
            config.event_id,
            f"sim-{self.run_id}-",
            config.plan,
            random.Random(self.rng.random()),
            crowd.ready_at,
        )
        try:
            event = await self._prepare(redis, crowd, stand_in)
            scripts = Scripts(redis)
            self._started = time.time()
            background = [
                asyncio.create_task(self._sample(scripts)),
                asyncio.create_task(self._track(scripts)),
                asyncio.create_task(self._report_progress(redis, event)),
            ]
            try:
                await self._drive(crowd)
                await self._settle()
            finally:
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
            ended = time.time()
            try:
                records = await self._records(scripts)
                drawn = await self._draw(redis)
            except (RedisError, OSError) as exc:
                raise SimulationError(f"cannot read the session records back: {exc}") from None
        finally:
            await asyncio.to_thread(stand_in.stop)
            await crowd.close()
            await redis.aclose()
        return RunData(
            config,
            self.run_id,
            event,
            self._started,
            ended,
            self.traces,
            records,
            self.samples,
            self.max_in_checkout,
            self.sample_count,
            self.redis_errors,
            crowd,
            stand_in,
            drawn,
        )

    async def _prepare(self, redis: Redis, crowd: Crowd, stand_in: CheckoutStandIn) -> EventConfig:
        from grpc import aio

        from shared.errors import WaitroomError

        config = self.config
        try:
            event = await EventStore(redis).get(config.event_id)
        except WaitroomError as exc:
            hint = "create it with `waitroom event create`"
            raise SimulationError(f"{exc.message}: {hint}", unreachable=False) from None
        except (RedisError, OSError) as exc:
            raise SimulationError(f"cannot reach Redis at {config.redis_url}: {exc}") from None
        try:
            await crowd.check()
        except aio.AioRpcError as exc:
            answer = exc.code().name
            raise SimulationError(f"the API at {config.target} does not answer: {answer}") from None
        try:
            await asyncio.to_thread(stand_in.start)
        except Exception as exc:
            raise SimulationError(f"cannot reach Kafka at {config.bootstrap}: {exc}") from None
        return await self._prepare_opening(redis, event)

    async def _prepare_opening(self, redis: Redis, event: EventConfig) -> EventConfig:
        """Set the opening asked for (or take the event's, if ahead), and check that what was
        asked of the crowd can happen on this event."""
        config = self.config
        if config.abandon and not event.idle_timeout_seconds:
            raise SimulationError(
                f"--abandon needs an idle timeout on {config.event_id} to drop absent users: "
                f"waitroom event update {config.event_id} --idle-timeout SECONDS",
                unreachable=False,
            )
        try:
            now_ms = await opening.redis_now_ms(redis)
            if config.opens_in is not None:
                self.opens_ms = await opening.schedule(redis, config.event_id, config.opens_in)
                event = await EventStore(redis).get(config.event_id)
            elif event.opens_ms > now_ms:
                self.opens_ms = event.opens_ms
        except Refused as exc:
            hint = "rehearse a scheduled sale on a fresh event (waitroom event create)"
            message = f"cannot set the opening: {exc}; {hint}"
            raise SimulationError(message, unreachable=False) from None
        except (RedisError, OSError) as exc:
            raise SimulationError(f"cannot reach Redis at {config.redis_url}: {exc}") from None
        if config.before and not self.opens_ms:
            raise SimulationError(
                f"--before needs an opening ahead: --opens-in, or an event with one "
                f"(waitroom event update {config.event_id} --opens-at TIME)",
                unreachable=False,
            )
        self._opens_at = time.time() + (self.opens_ms - now_ms) / 1000
        count = round(config.abandon * config.users)
        self._abandoning = set(self.rng.sample(range(config.users), count))
        return event

    def _new_trace(self, index: int) -> UserTrace:
        mode = self.config.mode
        if mode == "mixed":
            mode = "stream" if index % 2 else "poll"
        abandons = index in self._abandoning
        return UserTrace(index, f"sim-{self.run_id}-{index:07d}", mode, abandons)

    async def _drive(self, crowd: Crowd) -> None:
        """Let the users arrive and follow until all are settled or the time is up."""
        config = self.config
        deadline = self._started + config.timeout
        opens_in = self._opens_at - self._started if self.opens_ms else None
        before = round(config.before * config.users)
        arrivals = opening.arrival_offsets(
            config.users, before, opens_in, config.arrival, config.rate
        )
        tasks = []
        for index, offset in enumerate(arrivals):
            delay = self._started + offset - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.time() >= deadline:
                break
            trace = self._new_trace(index)
            self.traces.append(trace)
            tasks.append(asyncio.create_task(crowd.run(trace)))
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.0, deadline - time.time()))
        crowd.stop()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, Exception):  # a bug in the simulator: show it in the report
                crowd.stats.errors[f"simulator {type(result).__name__}: {result}"] += 1

    async def _settle(self) -> None:
        """Wait until every admitted user's checkout has ended, or the time is up."""
        deadline = self._started + self.config.timeout
        while time.time() < deadline:
            if not self._unfinished():
                return
            await asyncio.sleep(TRACK_SECONDS)

    def _unfinished(self) -> list[str]:
        """Admitted sessions whose checkout has not ended yet, and abandoned sessions not
        ended yet (dropped, or admitted in time and expired), as far as we know."""
        return [
            t.session_id
            for t in self.traces
            if (t.ready_at is not None or (t.abandons and t.session_id))
            and t.session_id not in self.final
        ]

    async def _track(self, scripts: Scripts) -> None:
        while True:
            pending = self._unfinished()
            for i in range(0, len(pending), STATUS_BATCH):
                try:
                    result = await scripts.status(
                        self.config.event_id, pending[i : i + STATUS_BATCH]
                    )
                except (RedisError, OSError):
                    self.redis_errors += 1
                    break
                for view in result.sessions:
                    if view.record is not None and view.record.status.terminal:
                        self.final[view.session_id] = view.record
            await asyncio.sleep(TRACK_SECONDS)

    async def _sample(self, scripts: Scripts) -> None:
        next_point = 0.0
        while True:
            try:
                # The status script with no sessions is one cheap read of both figures.
                figures = await scripts.status(self.config.event_id, [])
            except (RedisError, OSError):
                self.redis_errors += 1  # a gap in the samples; the records still check the cap
                await asyncio.sleep(SAMPLE_SECONDS)
                continue
            queue_length, in_checkout = figures.queue_length, figures.in_checkout
            self.sample_count += 1
            self.in_checkout = int(in_checkout)
            self.queue_length = int(queue_length)
            self.max_in_checkout = max(self.max_in_checkout, self.in_checkout)
            elapsed = time.time() - self._started
            if elapsed >= next_point:
                self.samples.append(Sample(round(elapsed, 3), int(queue_length), self.in_checkout))
                next_point = elapsed + SERIES_SECONDS
            await asyncio.sleep(SAMPLE_SECONDS)

    async def _report_progress(self, redis: Redis, event: EventConfig) -> None:
        last_joined = last_ready = 0
        last_time = time.time()
        while True:
            await asyncio.sleep(self.progress_seconds)
            now = time.time()
            joined = sum(1 for t in self.traces if t.session_id)
            ready = sum(1 for t in self.traces if t.ready_at is not None)
            # An abandoning user never hears how it ended: not "queued" from here.
            settled = sum(1 for t in self.traces if t.session_id and (t.settled or t.abandons))
            span = max(1e-6, now - last_time)
            paused = None
            try:
                gate = await read_gate(redis, self.config.event_id)
            except (RedisError, OSError):
                self.redis_errors += 1  # this line goes without a reason; the next may have one
            else:
                arriving = len(self.traces) < self.config.users
                paused = pause_reason(
                    gate,
                    queue_length=self.queue_length,
                    arriving=arriving,
                    admitted=ready - last_ready,
                    seconds=span,
                )
            self.progress(
                Progress(
                    elapsed=now - self._started,
                    users=self.config.users,
                    joined=joined,
                    queued=joined - settled,
                    in_checkout=self.in_checkout,
                    cap=event.max_concurrent,
                    done=len(self.final),
                    join_rate=(joined - last_joined) / span,
                    admit_rate=(ready - last_ready) / span,
                    paused=paused,
                )
            )
            last_joined, last_ready, last_time = joined, ready, now

    async def _draw(self, redis: Redis) -> DrawOutcome | None:
        """The draw of this run's opening, checked by the operator's commands once done."""
        if not self.opens_ms:
            return None
        drawn = await opening.read_draw(redis, self.config.event_id, self.opens_ms)
        if not drawn.drawn_ms:
            return drawn
        verified = await asyncio.to_thread(
            opening.verify, self.config.redis_url, self.config.event_id
        )
        return DrawOutcome(drawn.opens_ms, drawn.entrants, drawn.drawn_ms, drawn.ranks, verified)

    async def _records(self, scripts: Scripts) -> dict[str, SessionRecord]:
        """The server's record of every session this run created."""
        sids = [t.session_id for t in self.traces if t.session_id]
        records: dict[str, SessionRecord] = {}
        for i in range(0, len(sids), STATUS_BATCH):
            result = await scripts.status(self.config.event_id, sids[i : i + STATUS_BATCH])
            records.update({v.session_id: v.record for v in result.sessions if v.record})
        return records
