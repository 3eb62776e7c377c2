"""Asymmetric checkout-token keys: a directory of private keys, re-read so keys rotate live.

Each file ``<kid>.pem`` in ``WAITROOM_JWT_KEY_DIR`` holds one private key: Ed25519 (signs
EdDSA) or EC P-256 (signs ES256). The kid starts with the moment the key takes over signing,
``YYYYMMDDTHHMMSSZ`` in UTC (``waitroom token new-key`` names files so). Which key signs a
token is decided by the admission time the token carries: the key that took over last at or
before it. So the API and the admitter, which both mint a record's token, pick the same key
whatever moment each re-read the directory, as long as both have read the new file before it
takes over (``new-key`` dates it minutes ahead). Every key in the directory is published in the
JWKS; a retired key is removed by deleting its file once its last token has expired (the
longest checkout slot after the next key took over).
"""

from __future__ import annotations

import base64
import calendar
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

log = logging.getLogger(__name__)

#: A kid: the takeover time, then optionally a dash and a free label.
KID = re.compile(r"^(\d{8}T\d{6}Z)(?:-[A-Za-z0-9_.-]{1,64})?$")
TIME_FORMAT = "%Y%m%dT%H%M%SZ"

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


class KeyFileError(ValueError):
    """A key file that cannot be used (its name or its contents)."""


def kid_time_ms(kid: str) -> int:
    """When the key named ``kid`` takes over signing (ms since the epoch)."""
    match = KID.match(kid)
    if not match:
        raise KeyFileError(f"key id {kid!r} must start with its takeover time, YYYYMMDDTHHMMSSZ")
    try:
        parsed = time.strptime(match.group(1), TIME_FORMAT)
    except ValueError:
        raise KeyFileError(f"key id {kid!r} does not start with a real UTC time") from None
    return calendar.timegm(parsed) * 1000


def kid_for(takeover_s: float, label: str = "") -> str:
    stamp = time.strftime(TIME_FORMAT, time.gmtime(takeover_s))
    return f"{stamp}-{label}" if label else stamp


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str  # "EdDSA" or "ES256"
    private: PrivateKey = field(repr=False)
    takeover_ms: int
    #: ``base64url(header) + "."`` as PyJWT writes it (sorted keys, compact).
    header: bytes = field(repr=False)

    @property
    def public(self) -> PublicKey:
        return self.private.public_key()

    @property
    def deterministic(self) -> bool:
        """EdDSA signs a message the same way every time; ECDSA draws a random nonce."""
        return self.algorithm == "EdDSA"

    def jwk(self) -> dict[str, Any]:
        public = self.public
        if isinstance(public, ed25519.Ed25519PublicKey):
            data = dict(OKPAlgorithm.to_jwk(public, as_dict=True))
        else:
            data = dict(ECAlgorithm.to_jwk(public, as_dict=True))
        return {**data, "kid": self.kid, "alg": self.algorithm, "use": "sig"}


def load_key(path: Path) -> SigningKey:
    """The key in ``path`` (PEM, unencrypted PKCS#8 or traditional)."""
    kid = path.stem
    takeover_ms = kid_time_ms(kid)
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path.name}: not an unencrypted PEM private key ({exc})") from None
    if isinstance(private, ed25519.Ed25519PrivateKey):
        algorithm = "EdDSA"
    elif isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp256r1":
        algorithm = "ES256"
    else:
        raise KeyFileError(f"{path.name}: only Ed25519 (EdDSA) and P-256 (ES256) keys are used")
    header = json.dumps(
        {"alg": algorithm, "kid": kid, "typ": "JWT"}, separators=(",", ":"), sort_keys=True
    )
    return SigningKey(kid, algorithm, private, takeover_ms, _b64(header.encode()) + b".")


def new_key(directory: Path, takeover_s: float, algorithm: str, label: str = "") -> Path:
    """Write a fresh private key that takes over at ``takeover_s``; returns its path (0600)."""
    private: PrivateKey
    if algorithm == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    elif algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        raise KeyFileError(f"unknown algorithm {algorithm!r}: EdDSA or ES256")
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{kid_for(takeover_s, label)}.pem"
    if path.exists():
        raise KeyFileError(f"{path} exists already")
    path.touch(mode=0o600)
    path.write_bytes(pem)
    return path


class Keyring:
    """The keys of one directory, re-read at most every ``reload_seconds`` when used."""

    def __init__(self, directory: str | Path, reload_seconds: float = 30.0) -> None:
        self.directory = Path(directory)
        self.reload_seconds = reload_seconds
        self._keys: tuple[SigningKey, ...] = ()  # by takeover time, oldest first
        self._by_kid: dict[str, SigningKey] = {}
        self._loaded_at = 0.0
        self._lock = threading.Lock()  # the JWKS server reads from its own thread
        self.reloads = 0
        self.reload(strict=True)

    def reload(self, *, strict: bool = False) -> None:
        """Read the directory again. ``strict``: a bad file or no key at all raises
        (at start-up); later, a bad file is logged and skipped, and the keys read last time
        stay in use when none is left, so a half-copied file cannot stop token signing."""
        found, problems = [], []
        try:
            paths = sorted(self.directory.glob("*.pem"))
        except OSError as exc:
            paths, problems = [], [f"{self.directory}: {exc}"]
        for path in paths:
            try:
                found.append(load_key(path))
            except (KeyFileError, OSError) as exc:
                problems.append(str(exc))
        if strict and (problems or not found):
            raise KeyFileError("; ".join(problems) or f"no *.pem key in {self.directory}")
        for problem in problems:
            log.error("signing key skipped: %s", problem)
        with self._lock:
            self._loaded_at = time.monotonic()
            self.reloads += 1
            if found or not self._keys:
                self._keys = tuple(sorted(found, key=lambda k: (k.takeover_ms, k.kid)))
                self._by_kid = {k.kid: k for k in self._keys}

    def _fresh(self) -> tuple[SigningKey, ...]:
        if time.monotonic() - self._loaded_at >= self.reload_seconds:
            self.reload()
        return self._keys

    def signing_key(self, issued_ms: int) -> SigningKey:
        """The key for a token issued at ``issued_ms``: the last to take over by then (the
        oldest key when none had yet)."""
        keys = self._fresh()
        chosen = keys[0]
        for key in keys:
            if key.takeover_ms > issued_ms:
                break
            chosen = key
        return chosen

    def find(self, kid: str) -> SigningKey | None:
        self._fresh()
        return self._by_kid.get(kid)

    def jwks(self) -> dict[str, Any]:
        """The public keys as a JWKS document (RFC 7517)."""
        return {"keys": [key.jwk() for key in self._fresh()]}

    @property
    def kids(self) -> list[str]:
        return [k.kid for k in self._keys]

    def __repr__(self) -> str:
        return f"Keyring({str(self.directory)!r}, kids={self.kids}, reloads={self.reloads})"
