"""A sale through the three real processes against Redis as a ticket company runs it.

``Sale`` starts ``waitroom api``, ``waitroom admitter`` and ``waitroom consumer`` as
subprocesses with the environment a test gives (cluster, Sentinel, TLS), joins users through
the API's gRPC, and plays the order service: every ``queue.ready`` it reads from Kafka is
answered with ``checkout.completed``, which the consumer applies. ``verdict`` then reads every
session back and checks what a sale promises whatever Redis does underneath.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from redis.exceptions import RedisError

from shared.connections import redis_client
from shared.errors import WaitroomError
from shared.events import EventConfig, EventStore
from shared.kafka import ensure_topics
from shared.messages import CHECKOUT_COMPLETED, QUEUE_READY, checkout_message
from shared.proto import waitroom_pb2 as pb
from shared.proto.waitroom_pb2_grpc import WaitroomServiceStub
from shared.scripts import Scripts
from shared.sessions import SessionRecord, Status
from shared.settings import CommonSettings, load
from shared.timefmt import now_ms
from waitroom_dev.services import free_port, wait_for_port

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka  # noqa: F401

SECRET = "infra-tests-secret-0123456789abcdef-0123"
DEADLINE = 60.0


def settings_of(env: dict[str, str]) -> CommonSettings:
    """The common settings a process started with ``env`` reads."""
    return load(CommonSettings, env)


def run_redis(env: dict[str, str], body: Callable[[Scripts], Any]) -> Any:
    """Run the coroutine ``body(scripts)`` on a client built from ``env``, as processes do."""

    async def go() -> Any:
        client = redis_client(settings_of(env))
        try:
            return await body(Scripts(client))
        finally:
            await client.aclose()

    return asyncio.run(go())


def create_events(env: dict[str, str], events: list[str], **config: Any) -> None:
    async def body(scripts: Scripts) -> None:
        for event in events:
            await EventStore(scripts.redis, scripts).create(EventConfig(event, **config))

    run_redis(env, body)


def read_records(env: dict[str, str], sessions: dict[str, str]) -> dict[str, SessionRecord | None]:
    """Session id -> its record now (None: Redis does not know it), ``sessions`` mapping each
    session id to its event."""

    async def body(scripts: Scripts) -> dict[str, SessionRecord | None]:
        found: dict[str, SessionRecord | None] = {}
        for sid, event in sessions.items():
            view = (await scripts.status(event, [sid])).sessions[0]
            found[sid] = view.record
        return found

    result: dict[str, SessionRecord | None] = run_redis(env, body)
    return result


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def process_env(redis_env: dict[str, str], bootstrap: str, tag: str) -> dict[str, str]:
    """Settings for the three processes: the test's Redis, the session's broker, the short
    consumer-group timeouts the broker needs, and per-test checkout topics and group."""
    env = dict(os.environ)
    env.update(
        {
            "WAITROOM_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "WAITROOM_JWT_SECRET": SECRET,
            "WAITROOM_KAFKA_SESSION_TIMEOUT_MS": "2000",
            "WAITROOM_KAFKA_HEARTBEAT_INTERVAL_MS": "600",
            "WAITROOM_KAFKA_FETCH_MAX_WAIT_MS": "50",
            # Each test's own topics: the processes create them, as in tests/conftest.py.
            "WAITROOM_KAFKA_AUTO_CREATE_TOPICS": "1",
            "WAITROOM_TOPIC_CHECKOUT_COMPLETED": f"checkout.completed.{tag}",
            "WAITROOM_TOPIC_CHECKOUT_FAILED": f"checkout.failed.{tag}",
            "WAITROOM_TOPIC_CHECKOUT_EXPIRED": f"checkout.expired.{tag}",
            "WAITROOM_DLQ_TOPIC": f"waitroom.dlq.{tag}",
            "WAITROOM_CONSUMER_GROUP": f"waitroom-{tag}",
            "WAITROOM_ADMITTER_SWEEP_SECONDS": "0.2",
            "WAITROOM_API_GRACE_SECONDS": "2",
            "WAITROOM_LOG_LEVEL": "INFO",
        }
    )
    env.update(redis_env)
    return env


@dataclass
class Joined:
    event: str
    user: str
    session_id: str
    position: int


@dataclass
class Sale:
    """The three processes, a gRPC client, and the order service, for one test."""

    env: dict[str, str]
    workdir: Path
    events: list[str]
    processes: list[Process] = field(default_factory=list)
    joined: list[Joined] = field(default_factory=list)
    ready: dict[str, dict[str, Any]] = field(default_factory=dict)
    ready_copies: int = 0
    retries: int = 0
    api_port: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _channel: grpc.Channel | None = None

    # --- processes -------------------------------------------------------------------------

    def _start(self, name: str, module: str, extra: dict[str, str]) -> Process:
        log_path = self.workdir / f"{name}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", module],
                env={**self.env, **extra},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        process = Process(name, proc, log_path)
        self.processes.append(process)
        return process

    def start(self, *, api: bool = True, admitter: bool = True, consumer: bool = True) -> Sale:
        topics = {self.env[f"WAITROOM_TOPIC_CHECKOUT_{k}"]: 4 for k in ("COMPLETED", "FAILED")}
        topics[self.env["WAITROOM_TOPIC_CHECKOUT_EXPIRED"]] = 4
        topics[QUEUE_READY] = 10
        ensure_topics(settings_of(self.env), topics)
        if api:
            self.api_port = free_port()
            extra = {"WAITROOM_API_ADDR": f"127.0.0.1:{self.api_port}"}
            started = self._start("api", "waitroom_api", extra)
            try:
                wait_for_port(self.api_port, 30, started.proc)
            except Exception:
                raise AssertionError(f"the API did not start:\n{started.log()}") from None
            self._channel = grpc.insecure_channel(f"127.0.0.1:{self.api_port}")
        if admitter:
            self._start("admitter", "waitroom_admitter", {})
        if consumer:
            self._start("consumer", "waitroom_consumer", {})
            # Built here, not in the thread: imports in two threads at once can trip CPython
            # 3.11.7's AST recursion check (gh-106905) and fail the session at its end.
            clients = self._order_clients()
            self._thread(lambda: self._order_service(*clients))
        return self

    def _thread(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        self._threads.append(thread)

    def alive(self) -> dict[str, int | None]:
        """Each process's exit code (None while it runs)."""
        return {p.name: p.proc.poll() for p in self.processes}

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()[-4000:]}" for p in self.processes)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        if self._channel is not None:
            self._channel.close()
        return {p.name: p.stop() for p in self.processes}

    # --- users -------------------------------------------------------------------------------

    def join(self, event: str, user: str, *, patience: float = DEADLINE) -> Joined:
        """JoinQueue through the API; UNAVAILABLE (Redis failing over, a slot moving, too few
        replicas) is retried as a gateway would, with the same user (joining is idempotent)."""
        assert self._channel is not None
        stub = WaitroomServiceStub(self._channel)
        deadline = time.monotonic() + patience
        while True:
            try:
                reply = stub.JoinQueue(
                    pb.JoinQueueRequest(user_id=user, event_id=event), timeout=10
                )
                break
            except grpc.RpcError as exc:
                code = exc.code()  # type: ignore[attr-defined]
                if code != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                self.retries += 1
                time.sleep(0.05)
        joined = Joined(event, user, reply.session_id, reply.position)
        self.joined.append(joined)
        return joined

    # --- the order service -------------------------------------------------------------------

    def _order_clients(self) -> tuple[Any, Any]:
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition

        bootstrap = self.env["WAITROOM_KAFKA_BOOTSTRAP_SERVERS"]
        consumer = KafkaConsumer(
            bootstrap_servers=[bootstrap],
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=10,
        )
        producer = KafkaProducer(bootstrap_servers=[bootstrap], linger_ms=2)
        parts: list[Any] = []
        while not parts:
            found = consumer.partitions_for_topic(QUEUE_READY) or []
            parts = [TopicPartition(QUEUE_READY, p) for p in found]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        consumer.poll(timeout_ms=10)
        return consumer, producer

    def _order_service(self, consumer: Any, producer: Any) -> None:
        """Answer each new ``queue.ready`` of our events with ``checkout.completed``."""
        topic = self.env["WAITROOM_TOPIC_CHECKOUT_COMPLETED"]
        mine = {e.encode() for e in self.events}
        try:
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=50).values():
                    for record in records:
                        if record.key not in mine:
                            continue
                        body = json.loads(record.value)
                        self.ready_copies += 1
                        if body["session_id"] in self.ready:
                            continue  # a repeat (same message_id): the order service drops it
                        self.ready[body["session_id"]] = body
                        done = checkout_message(
                            CHECKOUT_COMPLETED,
                            body["session_id"],
                            body["user_id"],
                            body["event_id"],
                            now_ms(),
                        )
                        producer.send(topic, key=record.key, value=json.dumps(done).encode())
                producer.flush()
        finally:
            consumer.close()
            producer.close()

    def wait_until(self, check: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            dead = {k: v for k, v in self.alive().items() if v is not None}
            if dead:
                raise AssertionError(f"{dead} exited while waiting for {what}\n{self.logs()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")
            time.sleep(0.05)


def overlap(records: list[SessionRecord]) -> int:
    """The most sessions that were in checkout at one instant, from their admission and finish
    times (a finish at the same millisecond as an admission frees the slot first)."""
    edges = []
    for r in records:
        if r.admitted_ms:
            edges.append((r.admitted_ms, 1))
            edges.append((r.finished_ms or 2**62, -1))
    most = current = 0
    for _, step in sorted(edges):
        current += step
        most = max(most, current)
    return most


def unique_tag() -> str:
    return uuid.uuid4().hex[:10]


def events_on_every_shard(owner_of: Callable[[str], int], shards: int) -> list[str]:
    """Event ids, one per shard, found by trying names (an event's shard is its tag's slot)."""
    chosen: dict[int, str] = {}
    tag = unique_tag()
    i = 0
    while len(chosen) < shards:
        event = f"ev-{tag}-{i}"
        chosen.setdefault(owner_of(event), event)
        i += 1
    return list(chosen.values())


def threads(targets: list[Callable[[], None]]) -> Iterator[threading.Thread]:
    for target in targets:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        yield thread


# --- a sale through a failover, and refusals at start (tests of secured deployments) ----------


def sale_through_a_failover(
    sale: Sale, failover: Callable[[], object], *, before: int = 15, after: int = 15
) -> dict[str, SessionRecord | None]:
    """Users join the sale's events in turn; once ``before`` joins are in and someone was
    admitted, ``failover()`` kills a master and waits for its replacement; then ``after`` more
    joins, and every surviving session through checkout. Returns each acknowledged join's
    record now (None: the failover took the join back, which asynchronous replication allows).
    """
    stop = threading.Event()
    errors: list[BaseException] = []

    def joiner() -> None:
        i = 0
        try:
            while not stop.is_set():
                sale.join(sale.events[i % len(sale.events)], f"user-{i}")
                i += 1
                stop.wait(0.02)  # a steady crowd, not a flood the checkout must then drain
        except BaseException as exc:
            errors.append(exc)

    (thread,) = threads([joiner])
    try:
        sale.wait_until(lambda: len(sale.joined) >= before and sale.ready != {}, "a sale going")
        failover()
        joined, ready = len(sale.joined), len(sale.ready)
        sale.wait_until(lambda: len(sale.joined) >= joined + after, "joins after the failover")
        stop.set()
        thread.join(DEADLINE)
        sale.wait_until(lambda: len(sale.ready) > ready, "admissions after the failover")
        sessions = {j.session_id: j.event for j in sale.joined}

        unsettled: dict[str, str] = {}

        def settled() -> bool:
            unsettled.clear()
            try:
                records = read_records(sale.env, sessions)
            except (WaitroomError, RedisError) as exc:
                # WTR011: the guard is still checking the promoted server against Kafka (it
                # answers users the same); a connection error: another promotion under way.
                unsettled["*"] = repr(exc)
                return False
            for sid, r in records.items():
                if r is not None and r.status is not Status.COMPLETED:
                    unsettled[sid] = f"{r.status.name} ready={sid in sale.ready}"
            return not unsettled

        try:
            sale.wait_until(settled, "every surviving session through checkout")
        except AssertionError as exc:
            raise AssertionError(f"unsettled: {unsettled}\n{exc}") from None
        found = read_records(sale.env, sessions)
    finally:
        stop.set()
    assert not errors, errors
    return found


def sale_survives_a_failover(
    sale: Sale, failover: Callable[[], str]
) -> dict[str, SessionRecord | None]:
    """``sale_through_a_failover``, then the processes stopped: each must exit 0, and every
    join the failover did not take back must have been admitted. Prints what ``failover()``
    returned (what it killed and promoted) with what was lost; returns the records."""
    what = ""

    def run_failover() -> None:
        nonlocal what
        what = failover()

    try:
        records = sale_through_a_failover(sale, run_failover)
    finally:
        codes = sale.stop()
    assert codes == {"api": 0, "admitter": 0, "consumer": 0}, sale.logs()
    lost = [sid for sid, record in records.items() if record is None]
    print(
        f"\n{what}; {len(sale.joined)} joins acknowledged, {len(lost)} lost; {sale.retries} "
        f"UNAVAILABLE answers retried"
    )
    survivors = {sid for sid, record in records.items() if record is not None}
    assert survivors <= set(sale.ready), "a surviving user was never admitted"
    return records


def waitroom_command(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``waitroom ARGS`` (this tree's code) with ``env``."""
    code = "from waitroom_cli.main import cli; cli()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def refused_at_start(env: dict[str, str], process: str) -> str:
    """Start ``process``; it must exit 2 at once with one line on stderr. Returns the line."""
    result = waitroom_command(env, process)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]
