"""``waitroom recover``: readable output, JSON, refusals with the documented exit codes."""

from __future__ import annotations

import subprocess

from recovery_support import WAITROOM, Stack, create_event, outbox_empty, run, wait_until

from shared.scripts import Scripts


def _relayed_sale(stack: Stack, event_id: str, users: int = 5) -> None:
    stack.start("admitter")

    async def body(s: Scripts) -> None:
        await create_event(s, event_id, max_concurrent=2, rate=1000.0)
        for i in range(users):
            await s.join(event_id, f"user-{i}")

    run(stack.redis.url, body)
    wait_until(lambda: outbox_empty(stack.redis.url, event_id), "the sale relayed")


def test_recover_explains_what_it_did_then_finds_nothing_to_do(
    volatile_stack: Stack, event_id: str
) -> None:
    stack = volatile_stack
    _relayed_sale(stack, event_id)
    stack.redis.crash()
    stack.redis.start()

    first = stack.recover(event_id)
    assert first.returncode == 0, first.stderr
    assert f"{event_id}: restored in" in first.stdout
    assert "Redis has no state for the event" in first.stdout
    assert "sessions from Kafka  5 (3 queued, 2 ready)" in first.stdout
    assert "0 joins acknowledged but never on Kafka" in first.stdout
    assert "config               rebuilt from the last watermark on Kafka" in first.stdout
    assert "1 of 1 events restored" in first.stdout
    assert "reading Kafka" in first.stderr  # progress goes to stderr

    second = stack.recover_json(event_id)
    (event,) = second["events"]
    assert event["action"] == "verified" and event["event_id"] == event_id
    assert second["kafka_records"] >= 7 and second["kafka_seconds"] >= 0
    assert set(event) == {
        "event_id", "action", "reason", "config_rebuilt", "sessions", "written", "advanced",
        "kept", "conflicts", "seq_before", "seq_after", "head", "holes", "lost_joins",
        "skipped_tickets", "kafka_messages", "seconds",
    }  # fmt: skip
    third = stack.recover(event_id)
    assert f"{event_id}: verified: Redis holds everything Kafka does" in third.stdout


def test_recover_refuses_what_it_cannot_do(volatile_stack: Stack) -> None:
    stack = volatile_stack
    unknown = stack.recover("no-such-event")
    assert unknown.returncode == 1
    assert "unknown event(s): no-such-event" in unknown.stderr
    neither = stack.recover()
    assert neither.returncode == 1 and "--all" in neither.stderr
    both = stack.recover("x", "--all")
    assert both.returncode == 1

    env = {**stack.env(), "WAITROOM_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    down = subprocess.run(
        [WAITROOM, "recover", "--all", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 2 and "cannot reach Kafka" in down.stderr
    assert down.stdout == ""  # nothing half-printed for a script to misread
    off = subprocess.run(
        [WAITROOM, "recover", "--all"],
        env={**stack.env(), "WAITROOM_KAFKA_BOOTSTRAP_SERVERS": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert off.returncode == 1 and "no Kafka" in off.stderr
