"""Messages from the real world: Go timestamps are fine; what cannot be handled is dead-lettered."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable

from consumer_support import (
    ConsumerProcess,
    Topics,
    admitted_sessions,
    in_checkout,
    outcome,
    produce,
    read_topic,
    records,
    wait_until,
)

from shared.ids import event_suffix
from shared.sessions import Status
from waitroom_consumer import deadletter

Start = Callable[[dict[str, str]], ConsumerProcess]
GO_TIMESTAMP = "2025-11-14 10:00:00.123456789 +0700 +07 m=+12.345678901"


def test_a_failed_checkout_with_a_go_layout_timestamp_is_handled_not_dead_lettered(
    redis_url: str,
    bootstrap: str,
    event_id: str,
    topics: Topics,
    consumer_env: dict[str, str],
    consumers: Start,
) -> None:
    (sid,), _ = admitted_sessions(redis_url, event_id, admitted=1)
    go_style = {"session_id": sid, "user_id": "user0", "event_id": event_id}
    go_style["timestamp"] = GO_TIMESTAMP
    key = event_id.encode()
    # A broken message after it, in the same partition: once that one is dead-lettered, the
    # Go one has certainly been handled, and the dead-letter topic shows which one it was.
    produce(
        bootstrap,
        [
            (topics.failed, key, json.dumps(go_style).encode()),
            (topics.failed, key, b"{not json"),
        ],
    )
    consumers(consumer_env)
    letters = read_topic(bootstrap, topics.dlq, expected=1)
    assert [deadletter.decode(r.value)["value"] for r in letters] == [b"{not json"]
    (record,) = records(redis_url, event_id, [sid])
    assert record is not None and (record.status, record.reason) == (Status.FAILED, "failed")


def test_garbage_wrong_types_and_oversized_messages_are_dead_lettered_and_the_rest_handled(
    redis_url: str,
    bootstrap: str,
    event_id: str,
    topics: Topics,
    consumer_env: dict[str, str],
    consumers: Start,
) -> None:
    admitted, _ = admitted_sessions(redis_url, event_id, admitted=3)
    key = event_id.encode()
    keep = admitted[2]  # named by a bad message; it must stay in checkout

    def body(**fields: object) -> bytes:
        return json.dumps(fields).encode()

    bad = {
        "not JSON": b"\xff\xfe garbage \x00",
        "not a JSON object": b"[1, 2, 3]",
        "missing session_id": body(user_id="u", event_id=event_id),
        "must be a string": body(session_id=12345, event_id=event_id),
        "bytes; at most 1024": body(session_id=keep, pad="x" * 2000),
    }
    stream = [outcome("checkout.completed", admitted[0], event_id)]
    stream += bad.values()
    stream += [outcome("checkout.completed", admitted[1], event_id)]
    produce(bootstrap, [(topics.completed, key, value) for value in stream])
    consumers({**consumer_env, "WAITROOM_CONSUMER_MAX_MESSAGE_BYTES": "1024"})

    letters = read_topic(bootstrap, topics.dlq, expected=len(bad))
    assert len(letters) == len(bad)
    bodies = [deadletter.decode(r.value) for r in letters]
    for (reason, original), dead, letter in zip(bad.items(), bodies, letters, strict=True):
        assert reason in dead["reason"]
        assert dead["value"] == original
        assert base64.b64decode(dead["key_base64"]) == key == letter.key
        assert dead["topic"] == topics.completed
        assert dead["consumer_group"] == topics.group
    # Their places in the source topic: one partition, consecutive offsets after the first.
    assert len({b["partition"] for b in bodies}) == 1
    first = bodies[0]["offset"]
    assert [b["offset"] for b in bodies] == list(range(first, first + len(bad)))

    wait_until(lambda: in_checkout(redis_url, event_id) == 1, what="the valid messages")
    final = records(redis_url, event_id, admitted)
    assert [r.status for r in final if r] == [Status.COMPLETED, Status.COMPLETED, Status.READY]


def results(log: str) -> dict[str, int]:
    """The handler's counts from the consumer's last log line (its repr on the way out)."""
    match = re.search(r"consumer stopped: .*results=(\{[^}]*\})", log)
    assert match, "the consumer did not log its counts on the way out"
    return {k: int(v) for k, v in re.findall(r"'(\w+)': (\d+)", match.group(1))}


def test_messages_that_used_to_crash_the_consumer_never_stop_their_partition(
    redis_url: str,
    bootstrap: str,
    event_id: str,
    topics: Topics,
    consumer_env: dict[str, str],
    consumers: Start,
) -> None:
    (late_time, valid), _ = admitted_sessions(redis_url, event_id, admitted=2)
    key = event_id.encode()
    # Each of these made the consumer exit and restart on it, 15 times in 40 s, while the valid
    # completion behind it on the same partition waited forever.
    poison = {
        "nested deeper": b"[" * 30_000 + b"]" * 30_000,  # 60 KB: RecursionError
        "nested deeper ": b'{"session_id":' + b'{"a":' * 9_000 + b"1" + b"}" * 9_001,
        "not valid Unicode": json.dumps(
            {"session_id": "\ud800" * 22 + ".1." + event_suffix(event_id)}  # UnicodeEncodeError
        ).encode(),
    }
    # OverflowError before; now an unreadable time, which still frees the session's slot.
    beyond_9999 = {"session_id": late_time, "timestamp": "9999-12-31T23:59:59-23:59"}
    stream = [*poison.values(), json.dumps(beyond_9999).encode()]
    stream += [outcome("checkout.completed", valid, event_id)]
    produce(bootstrap, [(topics.completed, key, value) for value in stream])
    consumer = consumers(consumer_env)

    letters = [deadletter.decode(r.value) for r in read_topic(bootstrap, topics.dlq, expected=3)]
    expected = [(v, topics.completed) for v in poison.values()]
    assert [(d["value"], d["topic"]) for d in letters] == expected
    for reason, letter in zip(poison, letters, strict=True):
        assert reason.strip() in letter["reason"]
    wait_until(lambda: in_checkout(redis_url, event_id) == 0, what="both slots to be freed")
    final = records(redis_url, event_id, [late_time, valid])
    assert [r.status for r in final if r] == [Status.COMPLETED, Status.COMPLETED]

    assert consumer.running, "the consumer exited"
    assert consumer.terminate() == 0
    log = consumer.log()
    assert log.count("starting in group") == 1
    assert "Traceback" not in log  # refused by the decoder, not caught by the safety net
    assert results(log) == {"dead_lettered": 3, "bad_timestamp": 1, "done": 1}


def test_the_order_service_s_messages_are_handled_and_none_is_dead_lettered(
    redis_url: str,
    bootstrap: str,
    event_id: str,
    topics: Topics,
    consumer_env: dict[str, str],
    consumers: Start,
) -> None:
    (failed, completed), _ = admitted_sessions(redis_url, event_id, admitted=2)
    key = event_id.encode()

    def order(session_id: str, timestamp: str) -> bytes:
        # Exactly the shape CONTRACT.md shows: four fields, the Go layout on checkout.failed.
        body = {"session_id": session_id, "user_id": "user-7", "event_id": event_id}
        return json.dumps({**body, "timestamp": timestamp}).encode()

    # A broken message closes each partition: when its dead letter is the first one there,
    # nothing before it was dead-lettered.
    sentinel = b"{sentinel"
    produce(
        bootstrap,
        [
            (topics.failed, key, order("", GO_TIMESTAMP)),  # an order outside the waitroom
            (topics.failed, key, order(failed, GO_TIMESTAMP)),
            (topics.failed, key, sentinel),
            (topics.completed, key, order(completed, "26/11/2026 17:41")),  # unreadable time
            (topics.completed, key, sentinel),
        ],
    )
    consumer = consumers(consumer_env)

    letters = [deadletter.decode(r.value) for r in read_topic(bootstrap, topics.dlq, expected=2)]
    assert sorted((d["topic"], d["value"]) for d in letters) == sorted(
        [(topics.failed, sentinel), (topics.completed, sentinel)]
    )
    wait_until(lambda: in_checkout(redis_url, event_id) == 0, what="both slots to be freed")
    final = records(redis_url, event_id, [failed, completed])
    assert [r.status for r in final if r] == [Status.FAILED, Status.COMPLETED]

    assert consumer.terminate() == 0
    counts = results(consumer.log())
    assert counts == {"not_ours": 1, "done": 1, "bad_timestamp": 1, "dead_lettered": 2}
