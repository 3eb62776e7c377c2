"""What the recovery tests share: a Redis of their own (restarted, emptied, cut back), waitroom
processes, a snapshot of every session, and the recovery command."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from redis.asyncio import Redis

from shared import keys
from shared.events import EventConfig, EventStore
from shared.ids import ticket_of_session
from shared.messages import checkout_message
from shared.scripts import Scripts
from shared.sessions import Status
from shared.timefmt import now_ms
from shared.token import mint_for
from waitroom_dev.services import Service, redis_service

with warnings.catch_warnings():
    # kafka-python's import warns from importlib, which pytest's kafka filter does not catch.
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka  # noqa: F401

T = TypeVar("T")
SECRET = "test-secret-0123456789abcdef0123"
WAITROOM = shutil.which("waitroom") or "waitroom"
DEADLINE = 60.0


def run(redis_url: str, body: Callable[[Scripts], Awaitable[T]]) -> T:
    async def go() -> T:
        client = Redis.from_url(redis_url)
        try:
            return await body(Scripts(client))
        finally:
            await client.aclose()

    return asyncio.run(go())


def wait_until(check: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


@dataclass
class OwnRedis:
    """A redis-server for one test, which the test may kill, cut back and start again."""

    workdir: Path
    durable: bool
    service: Service = field(init=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.service = redis_service(self.workdir, durable=self.durable)
        if self.durable:
            # What operators run: the AOF written every second (the default, named here).
            self.service.args += ["--appendfsync", "everysec"]
        self.service.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.service.port}/0"

    def aof(self) -> Path:
        """The incremental AOF file (Redis 7's multi-part AOF): what an OS crash cuts."""
        (found,) = (self.workdir / "appendonlydir").glob("*.incr.aof")
        return found

    def crash(self, keep_aof_bytes: int | None = None) -> None:
        """kill -9, and optionally cut the AOF back to what an OS crash would leave."""
        self.service.kill()
        if keep_aof_bytes is not None:
            with self.aof().open("r+b") as f:
                f.truncate(keep_aof_bytes)

    def start(self) -> None:
        self.service.start()

    def stop(self) -> None:
        self.service.stop()


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Stack:
    """Environment and processes of one test: its Redis, the shared broker, its own topics."""

    redis: OwnRedis
    bootstrap: str
    workdir: Path
    processes: list[Process] = field(default_factory=list)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "WAITROOM_REDIS_URL": self.redis.url,
                "WAITROOM_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "WAITROOM_JWT_SECRET": SECRET,
                "WAITROOM_KAFKA_SESSION_TIMEOUT_MS": "2000",
                "WAITROOM_KAFKA_HEARTBEAT_INTERVAL_MS": "600",
                "WAITROOM_KAFKA_FETCH_MAX_WAIT_MS": "50",
                "WAITROOM_ADMITTER_SWEEP_SECONDS": "0.2",
                "WAITROOM_ADMITTER_GRACE_SECONDS": "5",
                "WAITROOM_CONSUMER_GROUP": f"g-{self.tag}",
                "WAITROOM_TOPIC_CHECKOUT_COMPLETED": f"t-{self.tag}.completed",
                "WAITROOM_TOPIC_CHECKOUT_FAILED": f"t-{self.tag}.failed",
                "WAITROOM_TOPIC_CHECKOUT_EXPIRED": f"t-{self.tag}.expired",
                "WAITROOM_DLQ_TOPIC": f"t-{self.tag}.dlq",
                "WAITROOM_RECOVERY_TICKET_MARGIN": "100",
            }
        )
        return env

    def topic(self, kind: str) -> str:
        return f"t-{self.tag}.{kind}"

    def start(self, *command: str, **extra: str) -> Process:
        log_path = self.workdir / f"{command[0]}-{len(self.processes)}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [WAITROOM, *command],
                env={**self.env(), **extra},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        process = Process(proc, log_path)
        self.processes.append(process)
        return process

    def recover(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [WAITROOM, "recover", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )

    def recover_json(self, *args: str) -> dict[str, Any]:
        done = self.recover(*args, "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        data: dict[str, Any] = json.loads(done.stdout)
        return data

    def cleanup(self) -> None:
        for process in self.processes:
            process.kill()
        self.redis.stop()


async def create_event(scripts: Scripts, event_id: str, **settings: Any) -> None:
    await EventStore(scripts.redis, scripts).create(EventConfig(event_id, **settings))


@dataclass(frozen=True)
class Seen:
    """A session as a user sees it: status, rank, its record's times and its token."""

    status: Status | None
    rank: int
    record: tuple[int, ...]
    token: str


def snapshot(redis_url: str, event_id: str, sids: list[str]) -> dict[str, Seen]:
    async def body(s: Scripts) -> dict[str, Seen]:
        result = await s.status(event_id, sids)
        seen = {}
        for view in result.sessions:
            rec = view.record
            if rec is None:
                seen[view.session_id] = Seen(None, -1, (), "")
                continue
            times = (rec.queued_ms, rec.expires_ms, rec.admitted_ms, rec.checkout_deadline_ms)
            token = mint_for(SECRET, view.session_id, event_id, rec) if rec.admitted_ms else ""
            seen[view.session_id] = Seen(rec.status, view.rank, times, token)
        return seen

    return run(redis_url, body)


def event_state(redis_url: str, event_id: str) -> dict[str, Any]:
    """Every key of the event but the lock and the rate bucket, read whole."""

    async def body(s: Scripts) -> dict[str, Any]:
        r = s.redis
        return {
            "config": await r.hgetall(keys.config(event_id)),
            "seq": await r.get(keys.seq(event_id)),
            "head": await r.get(keys.head(event_id)),
            "holes": await r.zrange(keys.holes(event_id), 0, -1, withscores=True),
            "sessions": await r.hgetall(keys.sessions(event_id)),
            "users": await r.hgetall(keys.users(event_id)),
            "checkout": await r.zrange(keys.checkout(event_id), 0, -1, withscores=True),
            "done": await r.zrange(keys.done(event_id), 0, -1, withscores=True),
            "outbox": await r.xlen(keys.outbox(event_id)),
        }

    return run(redis_url, body)


def outbox_empty(redis_url: str, event_id: str) -> bool:
    async def body(s: Scripts) -> bool:
        return int(await s.redis.xlen(keys.outbox(event_id))) == 0

    return run(redis_url, body)


def verified(redis_url: str, event_id: str) -> bool:
    async def body(s: Scripts) -> bool:
        return (await s.restore_probe(event_id)).verified

    return run(redis_url, body)


def tickets(sids: list[str]) -> list[int]:
    return [ticket_of_session(s) for s in sids]


def produce(bootstrap: str, records: list[tuple[str, bytes, bytes]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=[bootstrap], acks="all", linger_ms=5)
    try:
        futures = [producer.send(t, key=k, value=v) for t, k, v in records]
        producer.flush(30)
        for f in futures:
            f.get(30)
    finally:
        producer.close(5)


def complete(stack: Stack, event_id: str, sids: list[str]) -> None:
    """The order service's ``checkout.completed`` for each of ``sids``, on the stack's topic."""
    produce(
        stack.bootstrap,
        [
            (
                stack.topic("completed"),
                event_id.encode(),
                json.dumps(
                    checkout_message("checkout.completed", sid, "u", event_id, now_ms())
                ).encode(),
            )
            for sid in sids
        ],
    )
