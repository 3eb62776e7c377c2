"""A stand-in for the order service: answers ``queue.ready`` with a checkout outcome.

It reads ``queue.ready`` from the end of every partition (assigned directly, not through a
consumer group: there is no group join to wait for and nothing left behind in the broker), acts
only on this run's users, and once the user has seen READY (a real user needs the token to
reach checkout), after a random delay sends ``checkout.completed``,
``checkout.failed`` or nothing (the slot is left to expire), in the proportions asked for. The
outcome JSON is the contract's, keyed by event id, as the order service sends it.
"""

from __future__ import annotations

import heapq
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared import messages
from shared.kafka import kafka_producer
from shared.settings import CommonSettings, KafkaClientSettings
from shared.timefmt import now_ms

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckoutPlan:
    """How checkouts end: proportions of completed and failed (the rest say nothing), and the
    delay range in seconds between admission being seen and the outcome being sent."""

    complete: float = 0.8
    fail: float = 0.1
    delay_min: float = 0.2
    delay_max: float = 1.0

    def validate(self) -> CheckoutPlan:
        if min(self.complete, self.fail) < 0 or self.complete + self.fail > 1:
            raise ValueError("--complete and --fail must be within 0..1 and add up to at most 1")
        if not 0 <= self.delay_min <= self.delay_max:
            raise ValueError("--checkout-delay needs 0 <= MIN <= MAX")
        return self

    def choose(self, rng: random.Random) -> str | None:
        """The topic to answer on, or None to let the slot expire."""
        draw = rng.random()
        if draw < self.complete:
            return messages.CHECKOUT_COMPLETED
        if draw < self.complete + self.fail:
            return messages.CHECKOUT_FAILED
        return None


class CheckoutStandIn:
    """Consumes ``queue.ready`` in a thread and produces checkout outcomes after their delay."""

    def __init__(
        self,
        common: CommonSettings,
        tuning: KafkaClientSettings,
        event_id: str,
        user_prefix: str,
        plan: CheckoutPlan,
        rng: random.Random,
        user_ready: Callable[[str], float | None],
    ) -> None:
        self.common = common
        self.tuning = tuning
        self.event_id = event_id
        self.user_prefix = user_prefix
        self.plan = plan
        self.rng = rng
        self.user_ready = user_ready
        self.seen: dict[str, float] = {}  # session id -> when its queue.ready arrived
        self.sent: dict[str, str] = {}  # session id -> topic of the outcome sent
        self.duplicates = 0
        self.silent = 0
        self.send_errors = 0
        self._due: list[tuple[float, str, str, str]] = []  # (when, session, user, topic)
        self._awaiting: dict[str, tuple[str, str]] = {}  # session -> (user, topic)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Any = None
        self._producer: Any = None
        self.failure: BaseException | None = None

    def __repr__(self) -> str:
        return (
            f"CheckoutStandIn(event={self.event_id!r}, seen={len(self.seen)}, "
            f"sent={len(self.sent)}, silent={self.silent}, pending={self.pending})"
        )

    @property
    def pending(self) -> int:
        """Outcomes not sent yet (waiting for their user or for their delay)."""
        with self._lock:
            return len(self._due) + len(self._awaiting)

    def start(self) -> None:
        """Connect and position at the end of ``queue.ready``; returns once it is listening."""
        from kafka import KafkaConsumer, TopicPartition

        servers = [s.strip() for s in self.common.kafka_bootstrap_servers.split(",") if s.strip()]
        consumer = KafkaConsumer(
            bootstrap_servers=servers,
            group_id=None,
            enable_auto_commit=False,
            client_id="waitroom-simulate-checkout",
            fetch_max_wait_ms=min(self.tuning.fetch_max_wait_ms, 100),
            request_timeout_ms=max(self.tuning.request_timeout_ms, 5000),
        )
        try:
            partitions = self._partitions(consumer)
            assigned = [TopicPartition(messages.QUEUE_READY, p) for p in partitions]
            consumer.assign(assigned)
            consumer.seek_to_end(*assigned)
            for tp in assigned:  # resolve the end offsets now, before any user joins
                consumer.position(tp)
        except Exception:
            consumer.close()
            raise
        self._consumer = consumer
        self._producer = kafka_producer(self.common, self.tuning, client_id="waitroom-simulate")
        self._thread = threading.Thread(target=self._run, name="checkout-stand-in", daemon=True)
        self._thread.start()

    def _partitions(self, consumer: Any) -> list[int]:
        deadline = time.monotonic() + 10
        while True:
            found = consumer.partitions_for_topic(messages.QUEUE_READY)
            if found:
                return sorted(found)
            if time.monotonic() >= deadline:
                raise RuntimeError(f"topic {messages.QUEUE_READY} has no partitions")
            time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._producer is not None:
            self._producer.flush(10)
            self._producer.close(5)
        if self._consumer is not None:
            self._consumer.close()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._start_checkouts()
                wait_ms = self._send_due()
                batches = self._consumer.poll(timeout_ms=wait_ms, max_records=1000)
                for records in batches.values():
                    for record in records:
                        self._handle(record.value)
        except BaseException as exc:  # surfaced in the report, never swallowed
            self.failure = exc
            log.exception("checkout stand-in stopped")

    def _handle(self, value: bytes | None) -> None:
        try:
            body = json.loads(value or b"")
        except ValueError:
            return
        if not isinstance(body, dict) or body.get("event_id") != self.event_id:
            return
        user_id = str(body.get("user_id", ""))
        session_id = str(body.get("session_id", ""))
        if not user_id.startswith(self.user_prefix) or not session_id:
            return  # someone else's user: a real order service would not see them either
        if session_id in self.seen:
            self.duplicates += 1  # at-least-once delivery: act once per session
            return
        self.seen[session_id] = time.time()
        topic = self.plan.choose(self.rng)
        if topic is None:
            self.silent += 1
            return
        with self._lock:
            self._awaiting[session_id] = (user_id, topic)

    def _start_checkouts(self) -> None:
        """A checkout starts when its user has seen READY (they need the token to arrive)."""
        with self._lock:
            arrived = [sid for sid in self._awaiting if self.user_ready(sid) is not None]
            for session_id in arrived:
                user_id, topic = self._awaiting.pop(session_id)
                delay = self.rng.uniform(self.plan.delay_min, self.plan.delay_max)
                heapq.heappush(self._due, (time.monotonic() + delay, session_id, user_id, topic))

    def _send_due(self) -> int:
        """Send every outcome whose delay has passed; returns ms until the next one (max 100)."""
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._due or self._due[0][0] > now:
                    wait = self._due[0][0] - now if self._due else 0.1
                    return max(1, min(100, int(wait * 1000)))
                _, session_id, user_id, topic = heapq.heappop(self._due)
            body = messages.checkout_message(topic, session_id, user_id, self.event_id, now_ms())
            value = json.dumps(body, separators=(",", ":")).encode()
            future = self._producer.send(topic, key=self.event_id.encode(), value=value)
            future.add_errback(self._count_error)
            self.sent[session_id] = topic

    def _count_error(self, exc: BaseException) -> None:
        self.send_errors += 1
        log.warning("checkout outcome not delivered: %s", exc)
