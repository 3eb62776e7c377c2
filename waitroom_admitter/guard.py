"""The recovery guard: admit and relay an event only while Redis is known not to be behind Kafka.

Every event's config carries the run id of the Redis server that last checked it against Kafka
(``generation``). A server that restarted or failed over has another run id, and the join and
admit scripts refuse to work on the event until it is checked again (``fenced`` in
``event_lib.lua``). Each sweep the guard probes the events this replica owns: one still stamped
by this server is fine; any other is compared with its watermark on Kafka, and either stamped
(nothing lost) or rebuilt from Kafka (``shared.recovery.restore``), loudly: an ERROR line,
``waitroom_event_recovering`` and ``waitroom_redis_regressions_total`` (alert
``WaitroomRedisBehindKafka``). The relay asks ``relayable`` before every batch, so it never
relays (and deletes) records of an event not yet checked, which would hide what Redis lost, and
it writes each batch's watermark through ``prepare``/``relayed``.

When Redis changes server, the guard also looks for events Kafka knows and Redis lost entirely
(restarted empty): it reports them, and rebuilds them itself only with
``WAITROOM_RECOVERY_REBUILD_MISSING`` (an empty Redis looks the same as one emptied on purpose).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Set
from typing import Any

from redis.exceptions import RedisError

from shared import messages, metrics
from shared.backoff import Outage, bug, is_transient
from shared.ids import ticket_of_session
from shared.kafka import KafkaThread, KafkaUnreachable, Record
from shared.outbox import OutboxEntry
from shared.recovery.restore import best_mark, read_kafka, read_watermarks, recover_event
from shared.recovery.watermark import Watermark, event_config, regression
from shared.redis_modes import is_cluster, server_ids
from shared.scripts import Scripts
from shared.settings import (
    AdmitterSettings,
    CommonSettings,
    ConsumerSettings,
    KafkaClientSettings,
)

log = logging.getLogger(__name__)


class RecoveryGuard:
    """Checks owned events against Kafka and keeps the watermarks the relay writes."""

    def __init__(
        self,
        scripts: Scripts,
        common: CommonSettings,
        tuning: KafkaClientSettings,
        settings: AdmitterSettings,
        consumer: ConsumerSettings,
        *,
        on_verified: Callable[[str], None],
    ) -> None:
        self.scripts = scripts
        self.common = common
        self.tuning = tuning
        self.settings = settings
        self.consumer = consumer
        self.on_verified = on_verified
        self.kafka = common.kafka_enabled
        self.kafka_outage = Outage("Kafka (recovery check)", log, dependency="kafka")
        self.marks: dict[str, Watermark] = {}
        self.loaded = not self.kafka  # watermarks read from Kafka since start
        # Event -> the run id of the Redis server it was verified on. Per event, not per
        # process: in a Redis Cluster each event lives on its shard, and each shard is a
        # server of its own that can restart or fail over alone.
        self.verified: dict[str, str] = {}
        # Every Redis server (run id) this replica has seen, owned events or not: a run id not
        # seen before is a restarted or promoted server, whatever event revealed it (an event
        # whose lock was lost during the outage and taken again has no verified entry left).
        self.servers: set[str] = set()
        self.behind: set[str] = set()  # reported behind Kafka, not yet verified
        self.scanned = False  # searched for events a restarted server lost entirely
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._loading = asyncio.Lock()  # one read of the watermarks for every waiting check
        # A daemon thread, as for every blocking Kafka call: a read stuck on a hung broker
        # must not keep the process from exiting (asyncio's default executor is joined).
        self._thread = KafkaThread("recovery")
        self.checks = 0
        self.regressions = 0
        self.restored = 0

    # --- what the relay asks ------------------------------------------------------------------

    def relayable(self, event_id: str) -> bool:
        return self.loaded and event_id in self.verified

    async def prepare(
        self, event_id: str, entries: list[OutboxEntry]
    ) -> tuple[Record, Watermark] | None:
        """The watermark record to send with a batch (it holds once Kafka has the batch), or
        None when Redis is another server than the one the event was checked on: relaying now
        would write that server's run id into the watermark and hide what it lost, so the
        batch waits for the next sweep's check."""
        probe = await self.scripts.restore_probe(event_id)
        if probe.run_id != self.verified.get(event_id):
            self.verified.pop(event_id, None)
            return None
        joined = [e for e in entries if e.topic == messages.QUEUE_JOINED]
        ready = [e for e in entries if e.topic == messages.QUEUE_READY]
        batch = Watermark(
            event_id,
            generation=probe.run_id,
            relayed_id=entries[-1].entry_id.decode(),
            issued=probe.seq,
            max_ticket=max((_ticket(e) for e in joined), default=0),
            max_admitted=max((_ticket(e) for e in ready), default=0),
            config=event_config(probe.config),
            written_ms=int(time.time() * 1000),
        )
        known = self.marks.get(event_id)
        mark = batch if known is None else known.advanced(batch)
        return (messages.EVENTS_TOPIC, event_id.encode("utf-8"), mark.encode(), []), mark

    def relayed(self, mark: Watermark) -> None:
        self.marks[mark.event_id] = mark

    # --- the sweep's check --------------------------------------------------------------------

    async def check(self, owned: list[str]) -> None:
        """Probe the owned events; start checking (or rebuilding) those not verified by this
        Redis server. Redis errors propagate to the sweep, which retries them."""
        self.checks += 1
        # The servers holding the data (in a cluster, every primary), for when no owned event
        # is left to reveal a restart: a server that restarted empty lost even the event list.
        servers = await server_ids(self.scripts.redis) or frozenset()
        self._seen(servers, "")
        for gone in set(self.verified) - set(owned):
            del self.verified[gone]
        # One server holds every event unless in a cluster: an event verified on the server
        # INFO just answered from needs no probe (a probe per owned event per sweep was 0.9 s
        # of CPU a second with 10,000 events; docs/benchmarks.md, "Many events").
        one_server = next(iter(servers)) if servers and not is_cluster(self.scripts.redis) else None
        probes = {}
        for event_id in owned:
            if event_id in self._tasks or (
                one_server and self.verified.get(event_id) == one_server
            ):
                continue
            probe = await self.scripts.restore_probe(event_id)
            self._seen({probe.run_id}, f"of event {event_id}")
            if self.verified.get(event_id) == probe.run_id:
                continue
            self.verified.pop(event_id, None)
            probes[event_id] = probe
        if self.kafka and not self.scanned and "" not in self._tasks:
            self._spawn("", self._scan())  # again each sweep until Kafka answers
        for event_id, probe in probes.items():
            if probe.verified:
                self._verified(event_id, probe.run_id)
            elif event_id in self.behind and not self.settings.recovery_auto:
                continue  # reported; waits for `waitroom recover`
            elif not self.kafka:
                # No Kafka, no truth to compare with: nothing can be rebuilt, so go on.
                await self.scripts.restore_done(event_id, 0, "")
                self._verified(event_id, probe.run_id)
            else:
                self._spawn(event_id, self._verify(event_id))

    def _seen(self, run_ids: Set[str], what: str) -> None:
        """Note Redis servers; one never seen before (after the first look) restarted or was
        promoted: the watermarks in memory are the ones this replica relayed or read at start,
        the event's owner may have relayed newer ones since (replicas take turns), and a stale
        one hides what the new server lost, so read them again first, and look again for
        events the new server lost entirely."""
        new = {run_id for run_id in run_ids if run_id} - self.servers
        if not new:
            return
        if self.servers:
            log.warning(
                "Redis %s is a new server (run id %s)", what or "here", ", ".join(sorted(new))
            )
            self.loaded = not self.kafka
            self.scanned = False
        self.servers |= new

    def _verified(self, event_id: str, run_id: str) -> None:
        fresh = event_id not in self.verified
        self.verified[event_id] = run_id
        self.behind.discard(event_id)
        metrics.EVENT_RECOVERING.labels(event_id).set(0)
        if fresh:
            self.on_verified(event_id)

    def _spawn(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name=f"recovery:{name}")
        self._tasks[name] = task
        task.add_done_callback(lambda _: self._tasks.pop(name, None))

    async def _verify(self, event_id: str) -> None:
        """Compare the event with Kafka; stamp it, or rebuild it (``WAITROOM_RECOVERY_AUTO``)."""
        try:
            if not self.loaded:
                await self._load()
            probe = await self.scripts.restore_probe(event_id)
            mark = self.marks.get(event_id)
            reason = regression(probe, mark) or probe.recovery
            history = None
            if reason or (mark is None and probe.generation):
                # Behind, or checked before but without a watermark on Kafka: the topics decide.
                # (Never checked and no watermark: nothing of it was relayed since it was
                # created, so there is nothing Kafka could hold that Redis lost.)
                read = functools.partial(
                    read_kafka, self.common, self.tuning, self.consumer, {event_id}
                )
                state = await self._thread.call(read)
                self.kafka_outage.recovered()
                history = state.histories.get(event_id)
                mark = best_mark(history, state.watermarks.get(event_id) or mark)
                reason = regression(probe, mark) or probe.recovery
            if reason:
                self._report(event_id, reason)
                if not self.settings.recovery_auto and not probe.recovery:
                    return  # paused (fenced) until an operator runs `waitroom recover`
            report = await recover_event(
                self.scripts, event_id, history, mark, margin=self.settings.recovery_ticket_margin
            )
            if report.action == "verified":
                log.info("event %s checked against Kafka: Redis holds all of it", event_id)
            if report.action == "restored":
                self.restored += 1
                metrics.RECOVERY_LOST_JOINS.labels(event_id).inc(report.lost_joins)
                log.error(
                    "event %s rebuilt from Kafka in %.2f s: %s; %d joins were lost before "
                    "reaching Kafka; %d tickets skipped",
                    event_id,
                    report.seconds,
                    report.sessions,
                    report.lost_joins,
                    report.skipped_tickets,
                )
            if mark is not None:
                self.marks[event_id] = mark
            self._verified(event_id, probe.run_id)
        except Exception as exc:
            self._failed(exc, event_id)

    def _report(self, event_id: str, reason: str) -> None:
        if event_id in self.behind:
            return
        self.behind.add(event_id)
        self.regressions += 1
        metrics.REDIS_REGRESSIONS.labels(event_id).inc()
        metrics.EVENT_RECOVERING.labels(event_id).set(1)
        log.error(
            "Redis is behind Kafka for event %s: %s. Joins answer WTR011 and nobody is "
            "admitted until it is rebuilt (%s)",
            event_id,
            reason,
            "now" if self.settings.recovery_auto else "run `waitroom recover`",
        )

    async def _load(self) -> None:
        async with self._loading:
            if self.loaded:
                return  # another check read them while this one waited
            read = functools.partial(read_watermarks, self.common, self.tuning, self.consumer)
            marks = await self._thread.call(read)
            for event_id, mark in marks.items():
                known = self.marks.get(event_id)
                self.marks[event_id] = mark if known is None else mark.advanced(known)
            self.loaded = True
            self.kafka_outage.recovered()

    async def _scan(self) -> None:
        """Find events Kafka knows that this Redis server lost entirely."""
        try:
            await self._load()
            for event_id, mark in sorted(self.marks.items()):
                probe = await self.scripts.restore_probe(event_id)
                reason = None if probe.config else regression(probe, mark)
                if reason is None:
                    continue
                self._report(event_id, reason)
                if self.settings.recovery_rebuild_missing and event_id not in self._tasks:
                    self._spawn(event_id, self._verify(event_id))
            self.scanned = True
        except Exception as exc:
            self._failed(exc, "missing events")

    def _failed(self, exc: Exception, subject: str) -> None:
        """A check that could not finish is tried again at the next sweep."""
        if isinstance(exc, RedisError) and is_transient(exc):
            return  # Redis is down: the sweep's own calls report the outage
        if isinstance(exc, KafkaUnreachable | TimeoutError) or type(exc).__module__.startswith(
            "kafka"
        ):
            self.kafka_outage.failed(exc)
            return
        bug(log, "recovery", exc, subject)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._thread.close()

    def __repr__(self) -> str:
        return (
            f"RecoveryGuard(verified={len(self.verified)}, checks={self.checks}, "
            f"regressions={self.regressions}, restored={self.restored}, "
            f"checking={len(self._tasks)}, {self.kafka_outage!r})"
        )


def _ticket(entry: OutboxEntry) -> int:
    try:
        return ticket_of_session(str(entry.fields["session_id"]))
    except (KeyError, ValueError, IndexError):
        return 0
