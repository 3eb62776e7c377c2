"""Events from creation to deletion as an operator lives them: safe ids, refusals that say
what to do, an audit trail of every change, and a delete that leaves nothing behind."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
import redis
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from shared.cli import RET_ERROR
from shared.errors import WaitroomError
from shared.ids import EVENT_ID_PATTERN, validate_event_id
from shared.scripts import Scripts
from tests.conftest import JWT_SECRET
from waitroom_cli.main import cli

Invoke = Callable[..., Result]


@pytest.fixture
def invoke(redis_url: str) -> Invoke:
    def run(*args: str, input: str | None = None, **env: str) -> Result:
        environ = {
            "WAITROOM_REDIS_URL": redis_url,
            "WAITROOM_JWT_SECRET": JWT_SECRET,
            "WAITROOM_KAFKA_BOOTSTRAP_SERVERS": "",
            **env,
        }
        return CliRunner().invoke(cli, list(args), env=environ, input=input)

    return run


def keys_of(client: redis.Redis, event_id: str) -> list[str]:
    return sorted(k.decode() for k in client.scan_iter() if event_id in k.decode())


def fill(redis_url: str, event_id: str, waiting: int, admitted: int) -> None:
    async def go() -> None:
        async with Redis.from_url(redis_url) as client:
            scripts = Scripts(client)
            await scripts.join_many(event_id, [f"u{i}" for i in range(admitted + waiting)])
            if admitted:
                await scripts.admit(event_id, admitted)

    asyncio.run(go())


@pytest.mark.parametrize("bad", ["a b", "a:b", "{tag}", "é", "x" * 129, "", "a/b", "a*"])
def test_event_ids_outside_the_safe_set_are_refused_before_redis(invoke: Invoke, bad: str) -> None:
    result = invoke("event", "create", bad, WAITROOM_REDIS_URL="redis://127.0.0.1:1/0")
    assert result.exit_code == RET_ERROR, result.output
    assert "WTR007" in result.output and "cannot reach" not in result.output


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=140))
def test_validate_event_id_accepts_exactly_the_safe_set(value: str) -> None:
    safe = EVENT_ID_PATTERN.fullmatch(value) is not None
    try:
        assert validate_event_id(value) == value and safe
    except WaitroomError as exc:
        assert not safe and exc.code.prefix == "WTR007"


def test_update_with_nothing_to_change_and_reopening_a_closed_event(
    invoke: Invoke, event_id: str
) -> None:
    assert invoke("event", "create", event_id).exit_code == 0
    empty = invoke("event", "update", event_id)
    assert empty.exit_code == RET_ERROR and "nothing to update" in empty.stderr
    assert invoke("event", "close", event_id).exit_code == 0
    for verb in ("resume", "pause"):
        refused = invoke("event", verb, event_id)
        assert refused.exit_code == RET_ERROR, refused.output
        assert "is closed" in refused.stderr and "--reopen" in refused.stderr
    shown = json.loads(invoke("event", "show", event_id, "--json").stdout)
    assert shown["state"] == "closed"
    reopened = invoke("event", "resume", event_id, "--reopen")
    assert reopened.exit_code == 0 and "is now open" in reopened.stdout


def test_every_change_is_in_the_history_with_who_where_and_old_and_new_values(
    invoke: Invoke, event_id: str, sync_redis: redis.Redis
) -> None:
    steps = [
        ("create", event_id, "--rate", "5", "--by", "alice"),
        ("update", event_id, "--rate", "8", "--max-concurrent", "40", "--by", "bob"),
        ("update", event_id, "--rate", "8"),  # no change: not recorded
        ("pause", event_id, "--by", "carol"),
        ("close", event_id),
        ("resume", event_id, "--reopen"),
    ]
    for step in steps:
        assert invoke("event", *step).exit_code == 0
    entries = json.loads(invoke("event", "history", event_id, "--json").stdout)
    assert [e["action"] for e in entries] == ["create", "update", "pause", "close", "resume"]
    assert [e["by"] for e in entries[:3]] == ["alice", "bob", "carol"]
    assert entries[0]["changes"]["rate"] == [None, "5.0"]
    assert entries[1]["changes"] == {"rate": ["5.0", "8.0"], "max_concurrent": ["100", "40"]}
    assert entries[4]["changes"] == {"state": ["closed", "open"]}
    assert all(e["host"] and e["at_ms"] > 0 for e in entries)
    human = invoke("event", "history", event_id).stdout
    assert "update  by bob@" in human and "max_concurrent 100 -> 40, rate 5.0 -> 8.0" in human
    # Each change also waits in the outbox for the relay to publish it to waitroom.audit.
    topics = [f[b"t"] for _, f in sync_redis.xrange(f"wr:{{{event_id}}}:outbox")]
    assert topics == [b"waitroom.audit"] * 5


def test_delete_refuses_while_users_wait_then_leaves_nothing(
    invoke: Invoke, redis_url: str, event_id: str, sync_redis: redis.Redis
) -> None:
    other = event_id + "-other"
    for name in (event_id, other):
        created = invoke("event", "create", name, "--max-concurrent", "2", "--rate", "1000")
        assert created.exit_code == 0
    fill(redis_url, event_id, waiting=3, admitted=2)
    fill(redis_url, other, waiting=1, admitted=0)
    sync_redis.set(f"wr:{{{event_id}}}:lock", "admitter-1:token", px=60_000)
    before_other = keys_of(sync_redis, other)

    unconfirmed = invoke("event", "delete", event_id, input="n\n")
    assert unconfirmed.exit_code == RET_ERROR and "3 waiting, 2 in checkout" in unconfirmed.output
    assert "not deleted" in unconfirmed.stderr
    busy = invoke("event", "delete", event_id, "--yes")
    assert busy.exit_code == RET_ERROR
    assert "3 waiting and 2 in checkout" in busy.stderr and "--force" in busy.stderr
    assert keys_of(sync_redis, event_id) != []

    gone = invoke("event", "delete", event_id, "--yes", "--force", "--json")
    assert gone.exit_code == 0, gone.output
    assert json.loads(gone.stdout)["dropped"]["waiting"] == 3
    # Kafka is off here: the deletion could not be published, and it says so.
    assert "not published to waitroom.audit" in gone.stderr
    assert [k for k in keys_of(sync_redis, event_id) if not k.startswith(f"wr:{{{other}")] == []
    assert event_id.encode() not in sync_redis.smembers("wr:events")
    assert keys_of(sync_redis, other) == before_other  # its neighbour is untouched
    assert invoke("event", "show", event_id).exit_code == RET_ERROR
    again = invoke("event", "delete", event_id, "--yes")
    assert again.exit_code == RET_ERROR and "WTR006" in again.stderr


def test_delete_of_an_idle_event_asks_and_the_listing_survives_a_half_done_delete(
    invoke: Invoke, event_id: str, sync_redis: redis.Redis
) -> None:
    assert invoke("event", "create", event_id).exit_code == 0
    confirmed = invoke("event", "delete", event_id, input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert f"deleted event {event_id}" in confirmed.stdout
    # A delete cut short between its script and the listing's clean-up leaves an id behind.
    sync_redis.sadd("wr:events", "half-deleted")
    listing = invoke("event", "list")
    assert listing.exit_code == 0 and "half-deleted" not in listing.stdout
