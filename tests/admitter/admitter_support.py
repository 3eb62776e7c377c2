"""What the admitter tests share: admitter processes, joining users, reading Kafka topics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from shared import keys
from shared.events import EventConfig, EventStore
from shared.kafka import ensure_topics, import_kafka
from shared.scripts import Scripts
from shared.sessions import Status
from shared.settings import AdmitterSettings, CommonSettings, KafkaClientSettings
from shared.token import verify_signature
from waitroom_admitter.relay import TOPIC_PARTITIONS
from waitroom_admitter.worker import Admitter

WAITROOM = shutil.which("waitroom") or "waitroom"


async def create_event(redis: Redis, event_id: str, **settings: Any) -> None:
    await EventStore(redis).create(EventConfig(event_id, **settings))


async def join_users(scripts: Scripts, event_id: str, count: int, first: int = 0) -> list[str]:
    """Join ``count`` users one after another; their session ids in join order."""
    sessions = []
    for i in range(first, first + count):
        sessions.append((await scripts.join(event_id, f"user-{i}")).session_id)
    return sessions


@asynccontextmanager
async def running_admitter(
    redis_url: str, secret: str, **options: object
) -> AsyncIterator[Admitter]:
    """An admitter without Kafka (outbox only) running in this event loop."""
    common = CommonSettings(redis_url=redis_url, kafka_bootstrap_servers="", jwt_secret=secret)
    config = AdmitterSettings(**options)  # type: ignore[arg-type]
    admitter = Admitter(common, KafkaClientSettings(), config, replica_id="in-process")
    task = asyncio.create_task(admitter.run())
    try:
        yield admitter
    finally:
        admitter.stop()
        await asyncio.wait_for(task, 15)


async def wait_for(
    check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll the async ``check`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass
class AdmitterProcess:
    """A ``waitroom admitter`` subprocess with its log file."""

    replica: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@dataclass
class Admitters:
    """Starts admitter processes for a test and kills whatever is left at the end."""

    env: dict[str, str]
    workdir: Path
    started: list[AdmitterProcess] = field(default_factory=list)

    def start(self, replica: str, **settings: str) -> AdmitterProcess:
        env = dict(self.env)
        env["WAITROOM_ADMITTER_REPLICA_ID"] = replica
        env.update(settings)
        log_path = self.workdir / f"admitter-{replica}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [WAITROOM, "admitter"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        started = AdmitterProcess(replica, proc, log_path)
        self.started.append(started)
        return started

    def cleanup(self) -> None:
        for admitter in self.started:
            if admitter.proc.poll() is None:
                admitter.proc.kill()
                admitter.proc.wait()


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    message_id: str
    header_id: str
    body: dict[str, Any]


def _partitions(consumer: Any, topic: str, timeout: float) -> list[Any]:
    from kafka import TopicPartition

    deadline = time.monotonic() + timeout
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return [TopicPartition(topic, p) for p in sorted(parts)]
        if time.monotonic() > deadline:
            raise AssertionError(f"topic {topic} does not exist")
        consumer.topics()  # refreshes the metadata
        time.sleep(0.1)


class TopicReader:
    """Reads topics from the beginning in a thread, keeping one event's messages (the key).

    Used without a consumer group, as a tap: nothing is committed and no rebalance waits.
    """

    def __init__(self, bootstrap: str, topics: list[str], event_id: str) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.event_id = event_id
        self.messages: list[Message] = []
        self.on_message: Callable[[Message], None] | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        import_kafka()

    def __enter__(self) -> TopicReader:
        self._thread.start()
        if not self._ready.wait(30):
            raise AssertionError("the topic reader did not start")
        if self._error:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        try:
            consumer = self._open()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        key = self.event_id.encode()
        try:
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=50).values():
                    for record in records:
                        if record.key == key:
                            self._take(record)
        finally:
            consumer.close()

    def _open(self) -> Any:
        from kafka import KafkaConsumer

        # Created the way the admitter creates them, so the tap can start before it.
        settings = CommonSettings(kafka_bootstrap_servers=self.bootstrap)
        ensure_topics(settings, dict.fromkeys(self.topics, TOPIC_PARTITIONS), explicit=True)
        consumer = KafkaConsumer(
            bootstrap_servers=[self.bootstrap],
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=10,
            request_timeout_ms=5000,
        )
        try:
            parts = [tp for t in self.topics for tp in _partitions(consumer, t, 20)]
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
        except BaseException:
            consumer.close()
            raise
        return consumer

    def _take(self, record: Any) -> None:
        headers = dict(record.headers or [])
        body = json.loads(record.value)
        message = Message(
            record.topic,
            record.partition,
            record.offset,
            body["message_id"],
            headers.get("message_id", b"").decode(),
            body,
        )
        self.messages.append(message)
        if self.on_message is not None:
            self.on_message(message)

    def distinct(self, topic: str) -> dict[str, Message]:
        """First copy of each message id on ``topic``, in the order they arrived."""
        first: dict[str, Message] = {}
        for message in list(self.messages):
            if message.topic == topic:
                first.setdefault(message.message_id, message)
        return first


@contextlib.contextmanager
def topic_reader(bootstrap: str, topics: list[str], event_id: str) -> Iterator[TopicReader]:
    with TopicReader(bootstrap, topics, event_id) as reader:
        yield reader


class CheckoutService:
    """Plays the order service: takes each ``queue.ready`` once (by message id), checks its
    token, and finishes the session after a short random delay so the next user gets in."""

    def __init__(
        self, scripts: Scripts, event_id: str, secret: str, delay: tuple[float, float]
    ) -> None:
        self.scripts = scripts
        self.event_id = event_id
        self.secret = secret
        self.delay = delay
        self.finished: list[str] = []
        self.bad_tokens: list[str] = []
        self._seen: set[str] = set()
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()

    def attach(self, reader: TopicReader) -> None:
        loop = asyncio.get_running_loop()
        reader.on_message = lambda m: loop.call_soon_threadsafe(self._inbox.put_nowait, m)

    async def run(self, total: int, timeout: float) -> None:
        """Serve until ``total`` sessions finished checkout."""
        deadline = time.monotonic() + timeout
        while len(self.finished) < total:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"only {len(self.finished)} of {total} got through checkout")
            try:
                message = await asyncio.wait_for(self._inbox.get(), min(remaining, 0.5))
            except TimeoutError:
                continue
            if message.topic != "queue.ready" or message.message_id in self._seen:
                continue
            self._seen.add(message.message_id)
            verdict = verify_signature(self.secret, message.body["checkout_token"])
            claims = verdict.claims
            if not (
                verdict.valid
                and claims is not None
                and claims.session_id == message.body["session_id"]
                and claims.user_id == message.body["user_id"]
                and claims.event_id == self.event_id
            ):
                self.bad_tokens.append(message.body["session_id"])
            task = asyncio.create_task(self._finish(message.body["session_id"]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _finish(self, session_id: str) -> None:
        await asyncio.sleep(random.uniform(*self.delay))
        outcome = await self.scripts.finish(self.event_id, session_id, Status.COMPLETED, "done")
        if outcome == "DONE":
            self.finished.append(session_id)


async def sample_checkout(redis: Redis, event_id: str, stop: asyncio.Event) -> list[int]:
    """The number of users in checkout, read every 2 ms until ``stop``."""
    samples = []
    while not stop.is_set():
        samples.append(int(await redis.zcard(keys.checkout(event_id))))
        await asyncio.sleep(0.002)
    return samples


async def heartbeats(redis: Redis) -> dict[str, dict[str, Any]]:
    raw = await redis.hgetall(keys.ADMITTER_HEARTBEATS)
    return {k.decode(): json.loads(v) for k, v in raw.items()}


async def lock_owner(redis: Redis, event_id: str) -> str | None:
    """The replica holding the event's lock (its token starts with the replica id)."""
    token = await redis.get(keys.lock(event_id))
    return token.decode().split(":", 1)[0] if token else None
