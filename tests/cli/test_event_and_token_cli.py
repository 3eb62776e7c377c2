"""The operator commands as an operator runs them: `waitroom event ...`, `waitroom token verify`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import jwt
import pytest
from click.testing import CliRunner, Result
from redis.asyncio import Redis

from shared.cli import RET_CONNECT, RET_ERROR, RET_INVALID, RET_SETTINGS
from shared.scripts import Scripts
from shared.sessions import Status
from shared.token import mint_for
from tests.conftest import JWT_SECRET
from waitroom_cli.main import cli

Invoke = Callable[..., Result]


@pytest.fixture
def invoke(redis_url: str) -> Invoke:
    def run(*args: str, **env: str) -> Result:
        environ = {"WAITROOM_REDIS_URL": redis_url, "WAITROOM_JWT_SECRET": JWT_SECRET, **env}
        return CliRunner().invoke(cli, list(args), env=environ)

    return run


def test_create_show_update_list_pause_resume_close(invoke: Invoke, event_id: str) -> None:
    created = invoke("event", "create", event_id, "--max-concurrent", "50", "--rate", "25")
    assert created.exit_code == 0, created.output
    assert f"created event {event_id}: open" in created.output
    assert "max in checkout   50" in created.output

    shown = json.loads(invoke("event", "show", event_id, "--json").output)
    assert shown["max_concurrent"] == 50 and shown["rate"] == 25.0
    assert shown["checkout_ttl_seconds"] == 900 and shown["session_ttl_seconds"] == 7200
    # The one outbox record is the creation's audit entry, waiting for an admitter's relay.
    assert shown["stats"] == {
        "queue_length": 0, "in_checkout": 0, "outbox_backlog": 1, "tickets_issued": 0
    }  # fmt: skip

    updated = json.loads(
        invoke("event", "update", event_id, "--checkout-ttl", "60", "--json").output
    )
    assert updated["checkout_ttl_seconds"] == 60 and updated["max_concurrent"] == 50

    assert "is now paused" in invoke("event", "pause", event_id).output
    assert json.loads(invoke("event", "show", event_id, "--json").output)["state"] == "paused"
    assert "is now open" in invoke("event", "resume", event_id).output
    assert "was already open; nothing changed" in invoke("event", "resume", event_id).output
    closed = json.loads(invoke("event", "close", event_id, "--json").output)
    assert closed["state"] == "closed"

    listing = invoke("event", "list")
    assert listing.exit_code == 0
    assert event_id in listing.output and "closed" in listing.output and "0/50" in listing.output
    assert [e["event_id"] for e in json.loads(invoke("event", "list", "--json").output)] == [
        event_id
    ]


def test_refusals_are_clear_and_change_nothing(invoke: Invoke, event_id: str) -> None:
    missing = invoke("event", "show", event_id)
    assert missing.exit_code == RET_ERROR
    assert "WTR006" in missing.output and event_id in missing.output
    assert invoke("event", "create", event_id).exit_code == 0
    again = invoke("event", "create", event_id, "--rate", "99")
    assert again.exit_code == RET_ERROR and "exists; use `waitroom event update`" in again.output
    assert "WTR003" not in again.output
    bad = invoke("event", "update", event_id, "--rate", "0")
    assert bad.exit_code == RET_ERROR and "rate must be above 0" in bad.output
    assert json.loads(invoke("event", "show", event_id, "--json").output)["rate"] == 10.0
    invalid_id = invoke("event", "create", "a\x01b")
    assert invalid_id.exit_code == RET_ERROR and "control character" in invalid_id.output


def test_unreachable_redis_and_bad_settings_have_their_own_exit_codes(invoke: Invoke) -> None:
    down = invoke("event", "list", WAITROOM_REDIS_URL="redis://127.0.0.1:1/0")
    assert down.exit_code == RET_CONNECT and "cannot reach Redis" in down.output
    short = invoke("token", "verify", "x.y.z", WAITROOM_JWT_SECRET="short")
    assert short.exit_code == RET_SETTINGS and "WAITROOM_JWT_SECRET" in short.output


def test_token_verify_says_valid_then_revoked(
    invoke: Invoke, redis_url: str, event_id: str
) -> None:
    assert invoke("event", "create", event_id, "--max-concurrent", "1").exit_code == 0

    async def admit_one() -> tuple[str, str]:
        async with Redis.from_url(redis_url) as redis:
            scripts = Scripts(redis)
            sid = (await scripts.join(event_id, "user1")).session_id
            await scripts.admit(event_id, 10)
            record = (await scripts.status(event_id, [sid])).sessions[0].record
            assert record is not None and record.status is Status.READY
        return sid, mint_for(JWT_SECRET, sid, event_id, record)

    sid, token = asyncio.run(admit_one())
    valid = invoke("token", "verify", token, "--json")
    assert valid.exit_code == 0, valid.output
    data = json.loads(valid.output)
    assert data["valid"] and data["claims"]["session_id"] == sid

    async def complete() -> None:
        async with Redis.from_url(redis_url) as redis:
            await Scripts(redis).finish(event_id, sid, Status.COMPLETED, "completed")

    asyncio.run(complete())
    revoked = invoke("token", "verify", token)
    assert revoked.exit_code == RET_INVALID
    assert "INVALID: revoked: the session is COMPLETED" in revoked.output
    # Offline, only signature and expiry count: it still looks valid to the order service.
    assert invoke("token", "verify", token, "--offline").exit_code == 0
    forged = invoke("token", "verify", token, WAITROOM_JWT_SECRET="another-secret-" + "x" * 20)
    assert forged.exit_code == RET_INVALID and "bad signature" in forged.output


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"user_id": "user2"}, "forged: user_id differ"),
        ({"exp": 1}, "forged: exp differ"),  # added to the real exp: a later deadline
        ({"event_id": "other-event"}, "revoked: the session no longer exists"),
        ({"iss": "someone-else"}, "forged: its claims differ"),
        ({"role": "admin"}, "forged: its claims differ"),
    ],
)
def test_token_verify_refuses_a_token_re_signed_with_other_claims(
    invoke: Invoke, redis_url: str, event_id: str, change: dict[str, object], named: str
) -> None:
    """Someone holding the secret re-signs a real token with one claim changed: offline it
    passes (the signature is right), online it must not."""
    assert invoke("event", "create", event_id, "--max-concurrent", "1").exit_code == 0

    async def admit_one() -> str:
        redis = Redis.from_url(redis_url)
        scripts = Scripts(redis)
        sid = (await scripts.join(event_id, "user1")).session_id
        await scripts.admit(event_id, 10)
        record = (await scripts.status(event_id, [sid])).sessions[0].record
        assert record is not None
        await redis.aclose()
        return mint_for(JWT_SECRET, sid, event_id, record)

    real = asyncio.run(admit_one())
    assert invoke("token", "verify", real).exit_code == 0
    claims = jwt.decode(real, JWT_SECRET, algorithms=["HS256"])
    for name, value in change.items():
        claims[name] = claims[name] + value if name == "exp" else value
    forged = jwt.encode(claims, JWT_SECRET, algorithm="HS256")

    assert invoke("token", "verify", forged, "--offline").exit_code == 0
    result = invoke("token", "verify", forged)
    assert result.exit_code == RET_INVALID, result.output
    assert f"INVALID: {named}" in result.output
