"""The order service's stand-in: reads ``queue.ready``, answers after a short random delay.

Each admitted session (once, by ``message_id``) gets ``checkout.completed`` or
``checkout.failed`` after 50-500 ms, or no answer at all, so its slot runs out and the admitter
reclaims it. The choice is a pure function of the seed and the session id, so a run can be
replayed. It reads the topic without a consumer group (a tap), from the beginning, on a thread
of its own, and keeps producing through broker pauses: a send that fails is sent again.
"""

from __future__ import annotations

import heapq
import json
import random
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from shared import messages
from shared.timefmt import now_ms

with warnings.catch_warnings():
    # kafka-python reads its protocol schemas with a deprecated importlib call at import time.
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka  # noqa: F401

OUTCOMES = ("completed", "failed", "silent")
_WEIGHTS = (0.6, 0.2, 0.2)


def outcome_for(seed: int, session_id: str) -> str:
    """What the order service does with this session's checkout (replayable)."""
    return random.Random(f"{seed}:{session_id}").choices(OUTCOMES, _WEIGHTS)[0]


@dataclass
class CheckoutStandIn:
    """Plays the order service against one event on one broker."""

    bootstrap: str
    event_id: str
    seed: int
    decided: dict[str, str] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    errors: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._due: list[tuple[float, str, str]] = []  # (when, session id, user id)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="checkout", daemon=True)
        self._rng = random.Random(self.seed)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition

        consumer = KafkaConsumer(
            bootstrap_servers=[self.bootstrap],
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
            request_timeout_ms=5000,
        )
        producer = KafkaProducer(
            bootstrap_servers=[self.bootstrap],
            acks="all",
            linger_ms=5,
            request_timeout_ms=3000,
            max_block_ms=3000,
        )
        try:
            parts = [TopicPartition(messages.QUEUE_READY, p) for p in self._partitions(consumer)]
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            key = self.event_id.encode()
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=50).values():
                    for record in records:
                        if record.key == key:
                            self._take(json.loads(record.value))
                self._send_due(producer)
        finally:
            consumer.close()
            producer.close(timeout=5)

    @staticmethod
    def _partitions(consumer: Any) -> list[int]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(messages.QUEUE_READY)
            if parts:
                return sorted(parts)
            consumer.topics()
            time.sleep(0.1)
        raise RuntimeError("queue.ready does not exist")

    def _take(self, body: dict[str, Any]) -> None:
        sid = body["session_id"]
        if sid in self.decided:
            return  # a re-sent copy: the order service deduplicates too
        self.decided[sid] = outcome_for(self.seed, sid)
        if self.decided[sid] != "silent":
            when = time.monotonic() + self._rng.uniform(0.05, 0.5)
            with self._lock:
                heapq.heappush(self._due, (when, sid, body["user_id"]))

    def _send_due(self, producer: Any) -> None:
        now = time.monotonic()
        with self._lock:
            due = []
            while self._due and self._due[0][0] <= now:
                due.append(heapq.heappop(self._due))
        for _, sid, user in due:
            topic = f"checkout.{self.decided[sid]}"
            body = messages.checkout_message(topic, sid, user, self.event_id, now_ms())
            try:
                future = producer.send(
                    topic, key=self.event_id.encode(), value=json.dumps(body).encode()
                )
            except Exception:  # the broker is paused: the metadata wait timed out
                self._failed(sid, user)
                continue
            future.add_callback(lambda _meta, s=sid: self._sent(s))
            future.add_errback(lambda _exc, s=sid, u=user: self._failed(s, u))

    def _sent(self, sid: str) -> None:
        with self._lock:
            self.sent[sid] = self.sent.get(sid, 0) + 1

    def _failed(self, sid: str, user: str) -> None:
        # Runs on the producer's I/O thread; the heap is only touched here and on our thread
        # between polls, so the lock guards it.
        with self._lock:
            self.errors += 1
            heapq.heappush(self._due, (time.monotonic() + 0.5, sid, user))
