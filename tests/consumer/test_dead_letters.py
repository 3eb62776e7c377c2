"""Messages from the real world: Go timestamps are fine; what cannot be handled is dead-lettered."""

from __future__ import annotations

import base64
import json
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
    keep = admitted[2]  # named by two bad messages; it must stay in checkout

    def body(**fields: object) -> bytes:
        return json.dumps(fields).encode()

    bad = {
        "not JSON": b"\xff\xfe garbage \x00",
        "not a JSON object": b"[1, 2, 3]",
        "missing session_id": body(user_id="u", event_id=event_id),
        "must be a string": body(session_id=12345, event_id=event_id),
        "bytes; at most 1024": body(session_id=keep, pad="x" * 2000),
        "not an RFC 3339": body(session_id=keep, timestamp="yesterday"),
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
