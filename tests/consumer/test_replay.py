"""The broker's rewind: where the last ``WAITROOM_CONSUMER_REPLAY_SECONDS`` of handled messages
began, per partition, and what a rewind does to the batches in hand and fetched (a stand-in for
kafka-python's consumer; the end-to-end replay after Redis lost outcomes is in
tests/recovery/test_lost_outcomes.py)."""

from __future__ import annotations

import pytest
from consumer_support import FakeKafka, records_of
from kafka.structs import TopicPartition as TP

from shared.settings import CommonSettings, ConsumerSettings, KafkaClientSettings
from waitroom_consumer.broker import Broker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr("waitroom_consumer.broker.time.monotonic", clock)
    return clock


def make_broker(seconds: float) -> tuple[Broker, FakeKafka]:
    broker = Broker(
        CommonSettings(), KafkaClientSettings(), ConsumerSettings(replay_seconds=seconds)
    )
    kafka = FakeKafka()
    broker._consumer = kafka
    return broker, kafka


def handle(broker: Broker, kafka: FakeKafka, tp: TP, offsets: range) -> None:
    kafka.next = {tp: records_of(tp, offsets)}
    broker.handled(broker._poll(0))


def test_a_rewind_goes_back_to_where_the_window_s_messages_began_and_commits_it(
    clock: Clock,
) -> None:
    broker, kafka = make_broker(seconds=10)
    busy, quiet = TP("t", 0), TP("t", 1)
    handle(broker, kafka, quiet, range(0, 5))  # long before the window
    for second in range(30):  # one batch of 10 a second on `busy`
        handle(broker, kafka, busy, range(second * 10, second * 10 + 5))
        clock.now += 0.5
        handle(broker, kafka, busy, range(second * 10 + 5, second * 10 + 10))  # same mark
        clock.now += 0.5
    # Now is 1030: the window reaches back to 1020, whose batch began at offset 200.
    positions = broker._rewind()
    assert positions[("t", 0)] == 200
    assert kafka.seeks[busy] == 200
    # The quiet partition's last messages are older than the window, but the mark at its last
    # batch is the one kept past the window's edge: it goes back there (5 messages, harmless).
    assert positions[("t", 1)] == 0
    assert broker.pending[("t", 0)] == 200  # committed, so a crash during the replay replays


def test_batches_in_hand_at_a_rewind_record_nothing_of_a_rewound_partition(
    clock: Clock,
) -> None:
    broker, kafka = make_broker(seconds=60)
    tp = TP("t", 0)
    handle(broker, kafka, tp, range(0, 10))
    clock.now += 2
    kafka.next = {tp: records_of(tp, range(10, 20))}
    in_hand = broker._poll(0)
    kafka.next = {tp: records_of(tp, range(20, 30))}
    fetched = broker._poll(0)

    assert broker._rewind() == {("t", 0): 0}
    broker.handled(in_hand)  # finished after the rewind: applied, but nothing recorded
    broker.handled(fetched)
    assert broker.pending == {("t", 0): 0}

    # The replay, fetched after the rewind, counts again.
    kafka.next = {tp: records_of(tp, range(0, 30))}
    broker.handled(broker._poll(0))
    assert broker.pending == {("t", 0): 30}


def test_a_partition_with_nothing_handled_yet_keeps_its_batches_through_a_rewind(
    clock: Clock,
) -> None:
    """Nothing of it to replay, so it is not sought back: the batch fetched ahead at the rewind
    is the only fetch of its messages and must be recorded (once, dropping it lost them)."""
    broker, kafka = make_broker(seconds=60)
    busy, fresh = TP("t", 0), TP("t", 1)
    handle(broker, kafka, busy, range(0, 10))
    kafka.next = {fresh: records_of(fresh, range(0, 4))}
    fetched = broker._poll(0)

    assert broker._rewind() == {("t", 0): 0}
    assert fresh not in kafka.seeks
    broker.handled(fetched)
    assert broker.pending == {("t", 0): 0, ("t", 1): 4}


def test_a_partition_given_up_is_not_rewound(clock: Clock) -> None:
    broker, kafka = make_broker(seconds=60)
    kept, moved = TP("t", 0), TP("t", 1)
    handle(broker, kafka, kept, range(0, 3))
    handle(broker, kafka, moved, range(0, 3))
    broker.release([moved])
    assert broker._rewind() == {("t", 0): 0}
    assert moved not in kafka.seeks
