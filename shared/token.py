"""The checkout token: an HS256 JWT the order service verifies with the shared secret.

Claims: ``session_id``, ``user_id``, ``event_id``, ``iat`` (admission), ``exp`` (the slot's
deadline), plus ``jti`` (= session id) and ``iss``. It is a pure function of the admission record
and the secret, so any process mints the same token and nothing secret is stored in Redis.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

import jwt

from shared.scripts import Scripts
from shared.sessions import SessionRecord, Status

ALGORITHM = "HS256"
ISSUER = "ticketbottle-waitroom"


@dataclass(frozen=True)
class TokenClaims:
    session_id: str
    user_id: str
    event_id: str
    issued_at: int
    expires_at: int


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


# What PyJWT writes for HS256 (sorted keys, compact); `mint` is byte-identical to jwt.encode.
_SIGNED_HEADER = _b64(b'{"alg":"HS256","typ":"JWT"}') + b"."
# One encoder: json.dumps with non-default options builds a new one on every call.
_JSON = json.JSONEncoder(separators=(",", ":"))


def mint(secret: str, claims: TokenClaims) -> str:
    """Sign the claims with HS256.

    Written out rather than through ``jwt.encode``: the relay mints one token per admitted user
    and PyJWT's generic path cost 44 us of the relay's ~90 us per message; this is one HMAC.
    A test pins the output to PyJWT's byte for byte.
    """
    payload = {
        "session_id": claims.session_id,
        "user_id": claims.user_id,
        "event_id": claims.event_id,
        "iat": claims.issued_at,
        "exp": claims.expires_at,
        "jti": claims.session_id,
        "iss": ISSUER,
    }
    body = _JSON.encode(payload).encode("utf-8")
    signing_input = _SIGNED_HEADER + _b64(body)
    signature = hmac.new(secret.encode("utf-8"), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + _b64(signature)).decode("ascii")


def admission_claims(
    session_id: str, user_id: str, event_id: str, admitted_ms: int, deadline_ms: int
) -> TokenClaims:
    """The claims of an admission's token (``exp`` rounded up to whole seconds)."""
    return TokenClaims(session_id, user_id, event_id, admitted_ms // 1000, -(-deadline_ms // 1000))


def claims_for(session_id: str, event_id: str, record: SessionRecord) -> TokenClaims:
    return admission_claims(
        session_id, record.user_id, event_id, record.admitted_ms, record.checkout_deadline_ms
    )


def mint_for(secret: str, session_id: str, event_id: str, record: SessionRecord) -> str:
    return mint(secret, claims_for(session_id, event_id, record))


@dataclass(frozen=True)
class Verdict:
    valid: bool
    reason: str
    claims: TokenClaims | None


def verify_signature(secret: str, token: str, *, leeway: float = 0) -> Verdict:
    """Check signature, expiry and claims, as the order service does (no revocation check)."""
    try:
        data = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            leeway=leeway,
            options={"require": ["session_id", "user_id", "event_id", "iat", "exp"]},
        )
    except jwt.ExpiredSignatureError:
        return Verdict(False, "expired: the checkout slot's deadline has passed", None)
    except jwt.InvalidSignatureError:
        return Verdict(False, "bad signature: not signed with this secret", None)
    except jwt.MissingRequiredClaimError as exc:
        return Verdict(False, f"missing claim: {exc.claim}", None)
    except jwt.InvalidTokenError as exc:
        return Verdict(False, f"malformed: {exc}", None)
    claims = TokenClaims(
        str(data["session_id"]),
        str(data["user_id"]),
        str(data["event_id"]),
        int(data["iat"]),
        int(data["exp"]),
    )
    return Verdict(True, "valid", claims)


def check_revocation(verdict: Verdict, record: SessionRecord | None) -> Verdict:
    """Combine a signature verdict with the session's current record.

    A token is revoked when its session is no longer admitted (left, completed, failed,
    expired) or was admitted again under different terms.
    """
    if not verdict.valid or verdict.claims is None:
        return verdict
    if record is None:
        return Verdict(False, "revoked: the session no longer exists", verdict.claims)
    if record.status is not Status.READY:
        return Verdict(False, f"revoked: the session is {record.status.name}", verdict.claims)
    if record.admitted_ms // 1000 != verdict.claims.issued_at:
        return Verdict(False, "revoked: issued for an earlier admission", verdict.claims)
    return verdict


async def verify(scripts: Scripts, secret: str, token: str) -> Verdict:
    """Full check: signature, expiry, claims, and that the session still holds its slot."""
    verdict = verify_signature(secret, token)
    if not verdict.valid or verdict.claims is None:
        return verdict
    result = await scripts.status(verdict.claims.event_id, [verdict.claims.session_id])
    return check_revocation(verdict, result.sessions[0].record)
