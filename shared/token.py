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


#: The JWT claim that carries each ``TokenClaims`` field, to name the ones that differ.
_CLAIM_NAMES = {
    "session_id": "session_id",
    "user_id": "user_id",
    "event_id": "event_id",
    "issued_at": "iat",
    "expires_at": "exp",
}


def check_revocation(verdict: Verdict, record: SessionRecord | None) -> Verdict:
    """Combine a signature verdict with the session's current record.

    A token is revoked when its session is no longer admitted (left, completed, failed,
    expired) or was admitted again under different terms; it is forged when it is signed with
    the right secret but any claim differs from the one minted for this admission (another
    ``user_id``, a later ``exp``): only a holder of the secret could have made it.
    """
    if not verdict.valid or verdict.claims is None:
        return verdict
    claims = verdict.claims
    if record is None:
        return Verdict(False, "revoked: the session no longer exists", claims)
    if record.status is not Status.READY:
        return Verdict(False, f"revoked: the session is {record.status.name}", claims)
    if record.admitted_ms // 1000 != claims.issued_at:
        return Verdict(False, "revoked: issued for an earlier admission", claims)
    issued = claims_for(claims.session_id, claims.event_id, record)
    differing = [
        claim
        for name, claim in _CLAIM_NAMES.items()
        if getattr(issued, name) != getattr(claims, name)
    ]
    if differing:
        return Verdict(
            False, f"forged: {', '.join(differing)} differ from the session's admission", claims
        )
    return verdict


async def verify(scripts: Scripts, secret: str, token: str) -> Verdict:
    """Full check: signature, expiry, claims, and that the session still holds its slot.

    Last, the token must be byte for byte the one ``mint`` makes for this admission, so even
    claims ``TokenClaims`` does not carry (``jti``, ``iss``, any added claim) are compared.
    """
    verdict = verify_signature(secret, token)
    if not verdict.valid or verdict.claims is None:
        return verdict
    claims = verdict.claims
    result = await scripts.status(claims.event_id, [claims.session_id])
    record = result.sessions[0].record
    verdict = check_revocation(verdict, record)
    minted = mint_for(secret, claims.session_id, claims.event_id, record) if record else ""
    if verdict.valid and token != minted:
        return Verdict(False, "forged: its claims differ from the session's admission", claims)
    return verdict
