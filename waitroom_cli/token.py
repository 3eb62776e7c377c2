"""``waitroom token verify``: is a checkout token valid, and if not, why."""

from __future__ import annotations

import click

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
from shared.timefmt import format_ms


@click.group()
def token() -> None:
    """Checkout tokens."""


@token.command()
@click.argument("token_text", metavar="TOKEN")
@click.option("--offline", is_flag=True, help="Check signature and expiry only, not Redis.")
@json_option
def verify(token_text: str, offline: bool, as_json: bool) -> None:
    """Say whether TOKEN is valid now (signature, expiry, and not revoked) and why not."""
    try:
        secret = common_settings().require_secret()
    except SettingsError as exc:
        fail(str(exc), RET_SETTINGS)
        return

    async def go(scripts: Scripts) -> checkout_token.Verdict:
        return await checkout_token.verify(scripts, secret, token_text)

    verdict = checkout_token.verify_signature(secret, token_text) if offline else with_redis(go)
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
