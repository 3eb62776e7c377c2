"""``waitroom token``: is a checkout token valid and why not; the signing keys and their JWKS."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from shared import settings as settings_mod
from shared import token as checkout_token
from shared.cli import (
    RET_INVALID,
    RET_SETTINGS,
    common_settings,
    emit,
    fail,
    json_option,
    with_redis,
)
from shared.scripts import Scripts
from shared.settings import SettingsError
from shared.signing_keys import KeyFileError, Keyring, new_key
from shared.timefmt import format_ms


def _signer() -> checkout_token.Signer:
    """What the processes sign with: the keyring when WAITROOM_JWT_KEY_DIR is set."""
    try:
        keys = settings_mod.load(settings_mod.TokenKeySettings)
        return checkout_token.signer_for(common_settings(), keys)
    except (SettingsError, KeyFileError) as exc:
        fail(str(exc), RET_SETTINGS)


@click.group()
def token() -> None:
    """Checkout tokens and the keys that sign them."""


@token.command()
@click.argument("token_text", metavar="TOKEN")
@click.option("--offline", is_flag=True, help="Check signature and expiry only, not Redis.")
@json_option
def verify(token_text: str, offline: bool, as_json: bool) -> None:
    """Say whether TOKEN is valid now (signature, expiry, and not revoked) and why not.

    HS256 tokens are checked with WAITROOM_JWT_SECRET; with WAITROOM_JWT_KEY_DIR set, EdDSA and
    ES256 tokens with the key their `kid` names.
    """
    signer = _signer()

    async def go(scripts: Scripts) -> checkout_token.Verdict:
        return await checkout_token.verify(scripts, signer, token_text)

    verdict = checkout_token.verify_signature(signer, token_text) if offline else with_redis(go)
    claims = verdict.claims
    data = {
        "valid": verdict.valid,
        "reason": verdict.reason,
        "claims": vars(claims) if claims else None,
    }
    human = f"{'VALID' if verdict.valid else 'INVALID'}: {verdict.reason}"
    if claims:
        human += (
            f"\n  session {claims.session_id}\n  user {claims.user_id}  event {claims.event_id}"
            f"\n  issued {format_ms(claims.issued_at * 1000)}"
            f"  expires {format_ms(claims.expires_at * 1000)}"
        )
    emit(as_json, data, human)
    if not verdict.valid:
        raise SystemExit(RET_INVALID)


def _keyring() -> Keyring:
    signer = _signer()
    if not isinstance(signer, Keyring):
        fail("WAITROOM_JWT_KEY_DIR is not set: tokens are HS256, there are no public keys")
    return signer


@token.command()
def jwks() -> None:
    """Print the public keys as the JWKS document the order service verifies tokens with."""
    click.echo(json.dumps(_keyring().jwks(), indent=2, sort_keys=True))


@token.command()
@json_option
def keys(as_json: bool) -> None:
    """List the signing keys: which signs now, which take over later."""
    keyring = _keyring()
    now_ms = int(time.time() * 1000)
    current = keyring.signing_key(now_ms).kid
    rows = []
    for kid in keyring.kids:
        key = keyring.find(kid)
        assert key is not None
        if kid == current:
            state = "signing"
        elif key.takeover_ms > now_ms:
            state = "next"
        else:
            state = "retired (delete once its last token expired)"
        rows.append({"kid": kid, "algorithm": key.algorithm, "state": state})
    lines = [f"{r['kid']:<40} {r['algorithm']:<6} {r['state']}" for r in rows]
    emit(as_json, rows, "\n".join(lines))


@token.command(name="new-key")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write it (default: WAITROOM_JWT_KEY_DIR).",
)
@click.option("--algorithm", type=click.Choice(["EdDSA", "ES256"]), default="EdDSA")
@click.option(
    "--takeover-in",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="Seconds until it signs; longer than WAITROOM_JWT_KEY_RELOAD_SECONDS plus the "
    "verifiers' JWKS cache (60 s), so everyone knows the key before its first token.",
)
@json_option
def new_key_command(
    directory: Path | None, algorithm: str, takeover_in: float, as_json: bool
) -> None:
    """Write a new private key that takes over signing later (a rotation without restart).

    The old key stays in the directory, published and verifying its tokens; delete its file
    once the new key has signed for longer than the longest checkout slot.
    """
    common_settings()  # a bad WAITROOM_ setting is named here as by every other command
    if directory is None:
        configured = settings_mod.load(settings_mod.TokenKeySettings).key_dir.strip()
        if not configured:
            fail("give --dir or set WAITROOM_JWT_KEY_DIR", RET_SETTINGS)
        directory = Path(configured)
    try:
        path = new_key(directory, time.time() + takeover_in, algorithm)
    except (KeyFileError, OSError) as exc:
        fail(str(exc))
    data = {"path": str(path), "kid": path.stem, "algorithm": algorithm}
    emit(as_json, data, f"wrote {path} ({algorithm}); it signs from {path.stem[:16]}")
