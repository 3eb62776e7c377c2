"""Handling a batch of checkout outcomes: decode, finish the sessions, dead-letter the rest.

A batch is what one poll returned, in partition order. Its outcomes go to Redis as one
``finish`` call per event, each taking that event's outcomes in batch order (an event's messages
share a partition: they are keyed by event id), all in one pipeline: one round trip and one
command per event serve hundreds of messages, and per-partition order holds. A script error on
one outcome answers for that outcome alone; the outcomes after it are run again next round.

Each step is retried on its own until it succeeds (or shutdown abandons the batch,
uncommitted, for the next owner to replay), so the batch is only marked handled when every
Redis change and every dead letter is done.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

from redis.exceptions import ResponseError

from shared import metrics
from shared.backoff import bug, is_transient
from shared.errors import WaitroomError
from shared.ids import event_of_session
from shared.kafka import Record
from shared.messages import BadMessage, decode_checkout
from shared.scripts import FinishOutcome, Scripts
from shared.sessions import Status, checkout_outcomes
from shared.settings import ConsumerSettings
from shared.timefmt import now_ms
from waitroom_consumer import deadletter
from waitroom_consumer.broker import Broker, Message
from waitroom_consumer.deadletter import DeadLetter
from waitroom_consumer.retry import Retrier

log = logging.getLogger("waitroom.consumer")


@dataclass(frozen=True)
class Outcome:
    """What a topic means: the session's final status and the word recorded as its reason."""

    status: Status
    word: str


def outcomes(settings: ConsumerSettings) -> dict[str, Outcome]:
    """Topic name -> outcome, from the (configurable) topic names."""
    return {topic: Outcome(*done) for topic, done in checkout_outcomes(settings).items()}


class Finish(NamedTuple):
    """A message to apply: its session, and when the outcome happened.

    ``at_ms`` is the message's own timestamp, or the Kafka record's when that cannot be read
    (then ``timestamp_error`` says why, and the message is counted as ``bad_timestamp``).
    A NamedTuple for the same reason as ``Message``: one is built per message.
    """

    message: Message
    outcome: Outcome
    event_id: str
    session_id: str
    at_ms: int
    timestamp_error: str = ""


@dataclass(frozen=True)
class Skip:
    """A message with nothing to do here, counted under ``result``."""

    message: Message
    outcome: Outcome
    result: str


@dataclass
class Plan:
    """A batch sorted by what to do with each message."""

    finishes: list[Finish] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    errors: int = 0  # messages whose planning raised: a bug or an input we did not foresee


def plan_batch(batch: list[Message], topics: dict[str, Outcome], max_bytes: int) -> Plan:
    """Sort a batch, keeping its order within each list: finish, skip, or dead-letter.

    Never raises: a message whose planning fails in a way we did not foresee becomes a dead
    letter with the exception as its reason (logged once with its traceback), so one message can
    never stop its partition.
    """
    plan = Plan()
    for message in batch:
        try:
            decision = _plan_one(message, topics, max_bytes)
        except Exception as exc:
            log.exception(
                "cannot plan %s[%d]@%d; dead-lettering it",
                message.topic,
                message.partition,
                message.offset,
            )
            plan.errors += 1
            decision = deadletter.from_exception(message, exc)
        if isinstance(decision, Finish):
            plan.finishes.append(decision)
        elif isinstance(decision, Skip):
            plan.skipped.append(decision)
        else:
            plan.dead.append(decision)
    return plan


def _plan_one(
    message: Message, topics: dict[str, Outcome], max_bytes: int
) -> Finish | Skip | DeadLetter:
    outcome = topics.get(message.topic)
    if outcome is None:
        return DeadLetter(message, f"not a checkout topic: {message.topic}")
    try:
        decoded = decode_checkout(message.topic, message.value, max_bytes)
    except BadMessage as exc:
        return DeadLetter(message, str(exc))
    if not decoded.session_id:
        # The order service reports every failed order, waitroom or not, with an empty session id.
        return Skip(message, outcome, "not_ours")
    try:
        event_id = event_of_session(decoded.session_id)
    except WaitroomError:
        return Skip(message, outcome, "not_ours")  # some other system's id: counted, not an error
    if decoded.timestamp_ms is not None:
        at_ms = decoded.timestamp_ms
    else:  # Kafka's -1 means the record carries no time of its own
        at_ms = message.timestamp_ms if message.timestamp_ms >= 0 else now_ms()
    return Finish(message, outcome, event_id, decoded.session_id, at_ms, decoded.timestamp_error)


def _result(item: Finish, reply: FinishOutcome) -> str:
    """The metric's result label for a finished message."""
    if item.timestamp_error:
        # Counted once, here rather than under the script's answer: the slot was handled all the
        # same, but a producer sending unreadable times is broken in a way someone must see.
        log.warning(
            "%s[%d]@%d: %s; used the record's time, %d ms (finish: %s)",
            item.message.topic,
            item.message.partition,
            item.message.offset,
            item.timestamp_error,
            item.at_ms,
            reply,
        )
        return "bad_timestamp"
    return reply.value.lower()


class Handler:
    """Applies batches of checkout outcomes to Redis; counts what happened."""

    def __init__(
        self, scripts: Scripts, broker: Broker, settings: ConsumerSettings, retrier: Retrier
    ) -> None:
        self.scripts = scripts
        self.broker = broker
        self.settings = settings
        self.retrier = retrier
        self.outcomes = outcomes(settings)
        self.counts: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"Handler({dict(self.counts)})"

    async def handle(self, batch: list[Message]) -> None:
        """Apply a batch; returns when every message's effect is done. May raise Stopped."""
        await self.apply(self.plan(batch))

    def plan(self, batch: list[Message]) -> Plan:
        """Decode and sort a batch (pure CPU: the worker runs it while the batch before is in
        Redis)."""
        return plan_batch(batch, self.outcomes, self.settings.max_message_bytes)

    async def apply(self, plan: Plan) -> None:
        """Apply a planned batch; returns when every message's effect is done. May raise
        Stopped."""
        results: Counter[tuple[str, str]] = Counter(
            (k.outcome.word, k.result) for k in plan.skipped
        )
        if plan.errors:
            self.counts["planning_errors"] += plan.errors
        refused = await self._finish(plan.finishes, results)
        await self._dead_letter(plan.dead + refused)
        for (word, result), n in results.items():
            metrics.CHECKOUT_MESSAGES.labels(word, result).inc(n)
            self.counts[result] += n

    async def _finish(
        self, finishes: list[Finish], results: Counter[tuple[str, str]]
    ) -> list[DeadLetter]:
        """Run the finish scripts until each has an answer; returns those Redis refused."""
        refused: list[DeadLetter] = []
        todo = finishes
        while todo:
            args = [(f.event_id, f.session_id, int(f.outcome.status), f.outcome.word) for f in todo]
            try:
                replies = await self.scripts.finish_many(args)
            except Exception as exc:
                if not is_transient(exc):
                    return refused + await self._isolate(todo, results, exc)
                await self.retrier.wait(self.retrier.redis, exc)
                continue
            self.retrier.redis.recovered()
            again, error = [], None
            for item, reply in zip(todo, replies, strict=True):
                if reply is None:  # behind an error of its event: runs next round, in order
                    again.append(item)
                elif isinstance(reply, ResponseError):
                    if is_transient(reply):
                        again.append(item)
                        error = reply
                    else:  # the script itself failed on this session: never loop on it
                        bug(log, "consumer", reply, item.session_id)
                        refused.append(DeadLetter(item.message, f"redis refused it: {reply}"))
                else:
                    results[(item.outcome.word, _result(item, reply))] += 1
            if error is not None:
                await self.retrier.wait(self.retrier.redis, error)
            todo = again
        return refused

    async def _isolate(
        self, todo: list[Finish], results: Counter[tuple[str, str]], exc: Exception
    ) -> list[DeadLetter]:
        """The pipeline failed as a whole, not from an outage: one message must be the cause
        (redis-py refuses to encode a lone surrogate, failing every script with it). Run each
        alone, in order, so only the one that cannot be sent is dead-lettered."""
        if len(todo) == 1:
            bug(log, "consumer", exc, repr(todo[0].session_id))
            return [deadletter.from_exception(todo[0].message, exc)]
        refused: list[DeadLetter] = []
        for item in todo:
            refused += await self._finish([item], results)
        return refused

    async def _dead_letter(self, letters: list[DeadLetter]) -> None:
        """Produce the dead letters and wait for Kafka's acknowledgement, retrying."""
        if not letters:
            return
        group, now = self.settings.group, now_ms()
        records: list[Record] = [
            (self.settings.dlq_topic, d.message.key, deadletter.encode(d, group, now), [])
            for d in letters
        ]
        while True:
            try:
                await self.broker.produce(records)
                break
            except Exception as exc:
                await self.retrier.wait(self.retrier.kafka, exc)
        self.retrier.kafka.recovered()
        for d in letters:
            log.warning(
                "dead-lettered %s[%d]@%d: %s",
                d.message.topic,
                d.message.partition,
                d.message.offset,
                d.reason,
            )
            metrics.DEAD_LETTERS.labels(d.message.topic).inc()
        self.counts["dead_lettered"] += len(letters)
