"""The checkout token: a JWT the order service verifies.

By default HS256 with the secret shared with the order service. With ``WAITROOM_JWT_KEY_DIR``
set it is signed with a private key instead (EdDSA or ES256, ``shared.signing_keys``), carries
the key's ``kid``, and the order service verifies it with the published JWKS: it can check
tokens but no longer mint them. ``Signer`` is either: the secret, or the ``Keyring``.

Claims: ``session_id``, ``user_id``, ``event_id``, ``iat`` (admission), ``exp`` (the slot's
deadline), plus ``jti`` (= session id) and ``iss``. It is a pure function of the admission record
and the signer (the key is chosen by ``iat``), so the API and the admitter mint the same token
for a record (with ES256 the same claims and header under a different, equally valid,
signature), and nothing secret is stored in Redis.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from shared.scripts import Scripts
from shared.sessions import SessionRecord, Status
from shared.settings import CommonSettings, TokenKeySettings
from shared.signing_keys import Keyring, SigningKey

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


#: What signs tokens: the HS256 secret, or the asymmetric keys.
Signer = str | Keyring


def signer_for(common: CommonSettings, keys: TokenKeySettings) -> Signer:
    """The keyring when ``WAITROOM_JWT_KEY_DIR`` is set, else the HS256 secret (checked).

    Raises:
        SettingsError: the secret is too short (HS256).
        KeyFileError: the key directory holds no usable key, or a bad file.
    """
    if keys.key_dir.strip():
        return Keyring(keys.key_dir.strip(), keys.reload_seconds)
    return common.require_secret()


def _payload(claims: TokenClaims) -> bytes:
    payload = {
        "session_id": claims.session_id,
        "user_id": claims.user_id,
        "event_id": claims.event_id,
        "iat": claims.issued_at,
        "exp": claims.expires_at,
        "jti": claims.session_id,
        "iss": ISSUER,
    }
    return _b64(_JSON.encode(payload).encode("utf-8"))


def _sign(key: SigningKey, signing_input: bytes) -> bytes:
    private = key.private
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return private.sign(signing_input)
    # JWS wants ECDSA's r and s as two 32-byte numbers, not the DER that cryptography returns.
    r, s = decode_dss_signature(private.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def mint(signer: Signer, claims: TokenClaims) -> str:
    """Sign the claims: HS256 with a secret, or with the keyring's key for ``iat``.

    Written out rather than through ``jwt.encode``: the relay mints one token per admitted user
    and PyJWT's generic path cost 44 us of the relay's ~90 us per message; HS256 is one HMAC,
    EdDSA one Ed25519 signature (20 us measured here, ES256 18 us). Tests pin the output to
    PyJWT's byte for byte (HS256, EdDSA).
    """
    if isinstance(signer, Keyring):
        key = signer.signing_key(claims.issued_at * 1000)
        signing_input = key.header + _payload(claims)
        return (signing_input + b"." + _b64(_sign(key, signing_input))).decode("ascii")
    signing_input = _SIGNED_HEADER + _payload(claims)
    signature = hmac.new(signer.encode("utf-8"), signing_input, hashlib.sha256).digest()
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


def mint_for(signer: Signer, session_id: str, event_id: str, record: SessionRecord) -> str:
    return mint(signer, claims_for(session_id, event_id, record))


@dataclass(frozen=True)
class Verdict:
    valid: bool
    reason: str
    claims: TokenClaims | None


def _verification_key(signer: Signer, token: str) -> tuple[Any, str]:
    """The key and algorithm that must have signed ``token``; for a keyring, by its ``kid``.

    Raises:
        jwt.InvalidTokenError: the header is unreadable, or names a key we do not have.
    """
    if not isinstance(signer, Keyring):
        return signer, ALGORITHM
    kid = jwt.get_unverified_header(token).get("kid")
    key = signer.find(kid) if isinstance(kid, str) else None
    if key is None:
        raise _UnknownKey(f"unknown key id {kid!r}: not among the published keys")
    return key.public, key.algorithm


class _UnknownKey(jwt.InvalidTokenError):
    pass


def verify_signature(signer: Signer, token: str, *, leeway: float = 0) -> Verdict:
    """Check signature, expiry and claims, as the order service does (no revocation check)."""
    try:
        key, algorithm = _verification_key(signer, token)
        data = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            leeway=leeway,
            options={"require": ["session_id", "user_id", "event_id", "iat", "exp"]},
        )
    except jwt.ExpiredSignatureError:
        return Verdict(False, "expired: the checkout slot's deadline has passed", None)
    except jwt.InvalidSignatureError:
        return Verdict(False, "bad signature: not signed with this secret or key", None)
    except _UnknownKey as exc:
        return Verdict(False, f"bad signature: {exc}", None)
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


def same_token(signer: Signer, token: str, minted: str) -> bool:
    """Is ``token`` (whose signature was verified) the one minted for the admission?

    HS256 and EdDSA sign deterministically, so the whole token must match byte for byte.
    ECDSA draws a random nonce: two mints of one record differ in the signature, so there the
    header and claims (everything that was signed) must match, and the signature is valid
    because ``verify_signature`` checked it.
    """
    if token == minted:
        return True
    if not isinstance(signer, Keyring):
        return False
    signed = minted.rpartition(".")[0]
    key = signer.find(str(jwt.get_unverified_header(minted).get("kid")))
    return key is not None and not key.deterministic and token.rpartition(".")[0] == signed


async def verify(scripts: Scripts, signer: Signer, token: str) -> Verdict:
    """Full check: signature, expiry, claims, and that the session still holds its slot.

    Last, the token must be the one ``mint`` makes for this admission (``same_token``), so even
    claims ``TokenClaims`` does not carry (``jti``, ``iss``, any added claim) and the header
    (``alg``, ``kid``) are compared.
    """
    verdict = verify_signature(signer, token)
    if not verdict.valid or verdict.claims is None:
        return verdict
    claims = verdict.claims
    result = await scripts.status(claims.event_id, [claims.session_id])
    record = result.sessions[0].record
    verdict = check_revocation(verdict, record)
    minted = mint_for(signer, claims.session_id, claims.event_id, record) if record else ""
    if verdict.valid and not same_token(signer, token, minted):
        return Verdict(False, "forged: its claims differ from the session's admission", claims)
    return verdict
