"""Reading Kafka topics from their start to their end, with no consumer group.

Recovery reads everything the topics hold for some events; a group would only add a join (and
on Tansu a wait of half the session timeout) and commits nobody needs. The end is the end
offsets when the read starts (records past them in a fetched batch are read too: folding a
newer fact is harmless). Tansu reports as end offset the last batch's first offset plus one,
not the last record's: reading until the position reaches it, rather than stopping at it,
reads that last batch whole on both. Blocking: run it in a thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from shared.kafka import bootstrap_servers, client_options, probe_kafka, probe_tls
from shared.settings import CommonSettings, KafkaClientSettings

#: Records one poll may return; larger polls cut Python's per-poll overhead.
POLL_RECORDS = 5000


@dataclass(frozen=True)
class Record:
    topic: str
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


def read_to_end(
    common: CommonSettings,
    tuning: KafkaClientSettings,
    topics: Iterable[str],
    on_record: Callable[[Record], None],
    *,
    progress: Callable[[int, int], None] | None = None,
    timeout: float = 600.0,
) -> int:
    """Call ``on_record`` for every record the topics hold now, in partition order; returns how
    many were read. Topics that do not exist hold nothing. ``progress(read, total)`` is called
    after every poll.

    Raises:
        KafkaUnreachable: no bootstrap server answers.
        TimeoutError: the end was not reached within ``timeout`` seconds.
    """
    from kafka import KafkaConsumer, TopicPartition

    probe_kafka(bootstrap_servers(common))
    probe_tls(common)  # a broker certificate we do not trust fails here at once, in words
    consumer: Any = KafkaConsumer(
        **client_options(common),  # TLS and SASL like every other client
        client_id="waitroom-recovery",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
        request_timeout_ms=max(tuning.request_timeout_ms, 5000),
    )
    try:
        existing = consumer.topics()
        parts = [
            TopicPartition(topic, p)
            for topic in topics
            if topic in existing
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not parts:
            return 0
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        begins = consumer.beginning_offsets(parts)
        ends = consumer.end_offsets(parts)
        left = {tp: ends[tp] for tp in parts if ends[tp] > begins[tp]}
        total = sum(ends[tp] - begins[tp] for tp in left)
        read = 0
        deadline = time.monotonic() + timeout
        while left:
            if time.monotonic() > deadline:
                raise TimeoutError(f"read {read} of about {total} records in {timeout:g} s")
            for records in consumer.poll(timeout_ms=200, max_records=POLL_RECORDS).values():
                for r in records:
                    on_record(Record(r.topic, r.key, r.value, int(r.timestamp)))
                    read += 1
            for tp in list(left):
                if consumer.position(tp) >= left[tp]:
                    del left[tp]
            if progress is not None:
                progress(read, total)
        return read
    finally:
        consumer.close()
