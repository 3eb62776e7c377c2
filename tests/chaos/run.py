"""One chaos run: start the stack, run a sale through a schedule of faults, drain, and judge.

Used by the short run in the test suite (``test_chaos.py``) and the long one
(``python -m bench chaos``). Every wait is bounded; nothing is judged by how long it took.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from shared import keys
from shared.events import EventConfig, EventStore
from tests.chaos.checkout import CheckoutStandIn
from tests.chaos.crowd import Crowd
from tests.chaos.evidence import CapSampler, read_kafka, read_redis
from tests.chaos.faults import FaultLog, Injector
from tests.chaos.invariants import Evidence, Row, check_all
from tests.chaos.stack import JWT_SECRET, ChaosStack


@dataclass(frozen=True)
class RunConfig:
    """The size of the sale and the faults thrown at it."""

    users: int = 300
    faults: tuple[str, ...] = ()
    seed: int = 1
    cap: int = 20
    rate: float = 200.0
    checkout_ttl_seconds: float = 2.0
    arrival_seconds: float = 4.0
    first_fault_seconds: float = 1.0
    fault_gap_seconds: float = 1.0
    pause_seconds: float = 1.5
    rounds: int = 1
    drain_seconds: float = 60.0
    not_found_patience: float = 20.0


@dataclass
class RunResult:
    config: RunConfig
    event_id: str
    rows: list[Row]
    faults: FaultLog
    evidence: Evidence
    seconds: float
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def violations(self) -> int:
        """Broken invariants; the allowed loss (joins lost before Kafka) is not one."""
        return sum(r.broken for r in self.rows)

    def fault_table(self) -> str:
        lines = ["| at (s) | fault | took (s) | detail | result |", "|---:|---|---:|---|---|"]
        for e in self.faults.entries:
            lines.append(
                f"| {e['at']} | {e['fault']} | {e['seconds']} | {e['detail']} | {e['result']} |"
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "config": {k: v for k, v in vars(self.config).items()},
            "event_id": self.event_id,
            "seconds": round(self.seconds, 1),
            "violations": self.violations,
            "table": [r.to_json() for r in self.rows],
            "faults": self.faults.entries,
            "notes": self.notes,
        }

    def save(self, directory: Path) -> Path:
        """Write the run (table, fault log, every client's and Kafka's events, Redis at the
        end) into ``directory``; returns it."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "run.json").write_text(json.dumps(self.to_json(), indent=2))
        ev = self.evidence
        with (directory / "clients.jsonl").open("w") as f:
            for c in ev.clients:
                f.write(json.dumps(c.to_json()) + "\n")
        with (directory / "kafka.jsonl").open("w") as f:
            for r in ev.kafka:
                f.write(json.dumps(r.to_json()) + "\n")
        (directory / "redis.json").write_text(json.dumps(ev.redis.to_json()))
        (directory / "samples.json").write_text(json.dumps(ev.samples))
        exits = [vars(e) for e in ev.exits]
        (directory / "processes.json").write_text(json.dumps(exits, indent=2))
        return directory


#: Loggers of libraries that log their own handled errors with a traceback: kafka-python logs
#: one when a consumer is closed while its socket is being read (seen in the long run, in the
#: recovery guard's watermark read); grpc's core logs ExecuteBatchError when a stream's final
#: status cannot be sent because its client is already gone (a user killed mid-stream in the
#: long run). Not failures of ours; kept in the run's notes.
LIBRARY_LOGGERS = (" kafka.", " grpc._cython.cygrpc ExecuteBatchError")


def bugs_logged(stack: ChaosStack) -> tuple[list[str], list[str]]:
    """Tracebacks in the processes' logs: ``shared.backoff.bug`` logs every failure of ours
    with one, and an uncaught exception prints one. Returns (ours, the libraries')."""
    found: tuple[list[str], list[str]] = ([], [])
    for path in sorted(stack.workdir.glob("*.log")):
        lines = path.read_text("utf-8", "replace").splitlines()
        for i, line in enumerate(lines):
            if line.startswith("Traceback"):
                cause = next((ln for ln in lines[i + 1 :] if not ln.startswith(" ")), "?")
                said = lines[i - 1] if i else ""
                library = any(name in said for name in LIBRARY_LOGGERS)
                found[library].append(f"{path.name}: {said[-150:]} / {cause[:150]}")
    return found


async def _create_event(stack: ChaosStack, config: RunConfig, event_id: str) -> None:
    client = Redis.from_url(stack.redis_url)
    try:
        await EventStore(client).create(
            EventConfig(
                event_id,
                max_concurrent=config.cap,
                rate=config.rate,
                checkout_ttl_seconds=config.checkout_ttl_seconds,
            )
        )
    finally:
        await client.aclose()


async def _until(check: Callable[[], bool], timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)
    return True


async def _outbox_empty(stack: ChaosStack, event_id: str, timeout: float) -> bool:
    client = Redis.from_url(stack.redis_url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ConnectionError):
                if not await client.xlen(keys.outbox(event_id)):
                    return True
            await asyncio.sleep(0.2)
        return False
    finally:
        await client.aclose()


async def _run(config: RunConfig, workdir: Path, say: Callable[[str], None]) -> RunResult:
    event_id = f"chaos-{uuid.uuid4().hex[:8]}"
    stack = ChaosStack(workdir)
    started = time.monotonic()
    try:
        stack.start()
        await asyncio.to_thread(stack.wait_ready, 90)
        await _create_event(stack, config, event_id)
        crowd = Crowd(
            stack.api_address,
            event_id,
            config.users,
            config.seed,
            arrival_seconds=config.arrival_seconds,
            not_found_patience=config.not_found_patience,
        )
        checkout = CheckoutStandIn(stack.bootstrap, event_id, config.seed)
        checkout.start()
        sampler = CapSampler(stack.redis_url, event_id)
        injector = Injector(
            stack, event_id=event_id, pause_seconds=config.pause_seconds, clock=crowd.now
        )
        stop, faults_done = asyncio.Event(), asyncio.Event()
        crashed: list[str] = []
        skipped: list[str] = []

        async def supervise() -> None:
            while not stop.is_set():
                crashed.extend(stack.supervise())
                await asyncio.sleep(0.1)

        async def inject() -> None:
            await asyncio.sleep(config.first_fault_seconds)
            schedule = [f for _ in range(config.rounds) for f in config.faults]
            for i, fault in enumerate(schedule):
                if crowd.done():
                    # A fault on an idle stack tests nothing the sale would see.
                    skipped.extend(schedule[i:])
                    break
                say(f"fault {fault} at {crowd.now():.1f}s")
                await asyncio.to_thread(injector.inject, fault)
                await asyncio.sleep(config.fault_gap_seconds)
            faults_done.set()

        async def progress() -> None:
            while not stop.is_set():
                await asyncio.sleep(2)
                counts = " ".join(f"{k}={v}" for k, v in crowd.progress().items())
                top = max(sampler.samples, default=0)
                say(f"{crowd.now():5.1f}s {counts} max_in_checkout={top} crashes={len(crashed)}")

        tasks = [
            asyncio.create_task(coro)
            for coro in (crowd.run(stop), sampler.run(stop), supervise(), inject(), progress())
        ]
        await faults_done.wait()
        say("faults done; draining")
        drained = await _until(crowd.done, config.drain_seconds)
        relayed = await _outbox_empty(stack, event_id, 20)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        checkout.stop()
        say(f"drained={drained} outbox_empty={relayed}; stopping the processes")
        await asyncio.to_thread(stack.stop_all)
        ours, libraries = bugs_logged(stack)
        redis_state = await asyncio.to_thread(read_redis, stack.redis_url, event_id)
        kafka = await asyncio.to_thread(read_kafka, stack.bootstrap, event_id)
        evidence = Evidence(
            event_id=event_id,
            cap=config.cap,
            secret=JWT_SECRET,
            clients=crowd.clients,
            kafka=kafka,
            redis=redis_state,
            samples=sampler.samples,
            exits=stack.exits,
            bugs_logged=ours,
        )
        gave_up = [c for c in crowd.clients if c.gave_up]
        notes = {
            "drained": drained,
            "outbox_empty": relayed,
            "recoveries": injector.recoveries,
            "library_tracebacks": libraries,
            "samples_failed": sampler.failed,
            "checkout_decided": len(checkout.decided),
            "checkout_send_errors": checkout.errors,
            "process_starts": {w.name: w.starts for w in stack.workers},
            "faults_skipped_after_the_sale": skipped,
            # Users who never got an answer worth keeping: "join: NOT_FOUND" after the event
            # vanished, "stream: NOT_FOUND" after their session did.
            "gave_up": dict(Counter(": ".join(c.gave_up.split(": ")[:2]) for c in gave_up)),
        }
        return RunResult(
            config,
            event_id,
            check_all(evidence),
            injector.log,
            evidence,
            time.monotonic() - started,
            notes,
        )
    finally:
        stack.shutdown()


def run(config: RunConfig, workdir: Path, say: Callable[[str], None] = lambda _: None) -> RunResult:
    """Run one chaos run in ``workdir`` (logs and the Redis directory stay there)."""
    return asyncio.run(_run(config, workdir, say))
