import base64
import json
import time

import jwt
import pytest

from shared import messages
from shared.messages import BadMessage, decode_checkout
from shared.token import TokenClaims, mint, verify_signature

SECRET = "unit-secret-0123456789abcdef-0123456789"


def _claims(exp_offset: int = 900) -> TokenClaims:
    now = int(time.time())
    return TokenClaims("sid.ZXY", "user1", "concert1", now, now + exp_offset)


def test_token_carries_the_contract_claims_and_verifies_like_the_order_service() -> None:
    token = mint(SECRET, _claims())
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "HS256"
    data = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert {"session_id", "user_id", "event_id", "iat", "exp"} <= set(data)
    assert (data["session_id"], data["user_id"], data["event_id"]) == (
        "sid.ZXY",
        "user1",
        "concert1",
    )
    verdict = verify_signature(SECRET, token)
    assert verdict.valid and verdict.claims == _claims()


def test_token_is_a_pure_function_of_the_admission_and_identical_to_pyjwt() -> None:
    claims = _claims()
    assert mint(SECRET, claims) == mint(SECRET, claims)
    payload = {
        "session_id": claims.session_id,
        "user_id": claims.user_id,
        "event_id": claims.event_id,
        "iat": claims.issued_at,
        "exp": claims.expires_at,
        "jti": claims.session_id,
        "iss": "ticketbottle-waitroom",
    }
    assert mint(SECRET, claims) == jwt.encode(payload, SECRET, algorithm="HS256")
    unicode_claims = TokenClaims("s.1.ZQ", "usér/ü", "konzért", 1, 2**33)
    assert (
        jwt.decode(
            mint(SECRET, unicode_claims),
            SECRET,
            algorithms=["HS256"],
            options={"verify_exp": False},
        )["user_id"]
        == "usér/ü"
    )


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (lambda: mint("another-secret-0123456789-0123456789", _claims()), "bad signature"),
        (lambda: mint(SECRET, _claims(exp_offset=-5)), "expired"),
        (lambda: "not.a.token", "malformed"),
        (lambda: jwt.encode({"user_id": "u", "exp": time.time() + 60}, SECRET), "missing claim"),
    ],
)
def test_invalid_tokens_say_why(token: object, reason: str) -> None:
    verdict = verify_signature(SECRET, token())  # type: ignore[operator]
    assert not verdict.valid
    assert verdict.reason.startswith(reason)


def test_checkout_messages_decode_rfc3339_and_go_timestamps() -> None:
    rfc = json.dumps(
        {"session_id": "s", "user_id": "u", "event_id": "e", "timestamp": "2026-11-26T17:41:39Z"}
    ).encode()
    go = json.dumps(
        {
            "session_id": "s",
            "user_id": "u",
            "event_id": "e",
            "timestamp": "2025-11-14 10:00:00.123456789 +0700 +07 m=+12.345678901",
        }
    ).encode()
    assert decode_checkout(messages.CHECKOUT_COMPLETED, rfc, 4096).session_id == "s"
    assert decode_checkout(messages.CHECKOUT_FAILED, go, 4096).timestamp_ms == 1763089200123


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xff\xfe not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"user_id": "u"}', "missing session_id"),
        (b'{"session_id": 42}', "must be a string"),
        (b'{"session_id": "' + b"x" * 5000 + b'"}', "at most 4096"),
        (None, "empty message"),
    ],
)
def test_bad_checkout_messages_are_refused_with_a_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(BadMessage, match=reason):
        decode_checkout(messages.CHECKOUT_FAILED, value, 4096)


def test_produced_messages_have_contract_fields_a_key_and_a_stable_id() -> None:
    body = messages.queue_left("s1", "u1", "concert1", "user_left", 1_000, 2_000)
    out = messages.encode(messages.QUEUE_LEFT, "concert1", "s1:left", body)
    data = json.loads(out.value)
    assert set(data) == {
        "session_id",
        "user_id",
        "event_id",
        "reason",
        "left_at",
        "timestamp",
        "message_id",
    }
    assert out.key == b"concert1" and data["message_id"] == "s1:left"
    assert data["left_at"] == "1970-01-01T00:00:01.000Z"
