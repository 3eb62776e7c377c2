"""Asymmetric checkout tokens: minted like PyJWT, published as a JWKS, rotated live, and
checked by an independent verifier (PyJWT's PyJWKClient) that fetches the JWKS over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import jwt
import pytest

from shared import token
from shared.events import EventConfig, EventStore
from shared.jwks import PATH, JwksServer
from shared.scripts import Scripts
from shared.sessions import Status
from shared.signing_keys import KeyFileError, Keyring, load_key, new_key
from shared.token import TokenClaims, admission_claims, mint, same_token, verify_signature
from tests.api.api_support import api_env, launch
from tests.support import with_scripts
from waitroom_dev.services import free_port

HOUR = 3600.0


def claims_at(issued_s: float, user: str = "u1") -> TokenClaims:
    issued = int(issued_s)
    return TokenClaims("sid.1.ZXY", user, "ev", issued, issued + 900)


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    new_key(directory, time.time() - 2 * HOUR, "EdDSA")
    return directory


@pytest.fixture
def served(keydir: Path) -> Iterator[tuple[Keyring, str]]:
    keyring = Keyring(keydir, reload_seconds=1)
    server = JwksServer(keyring, "127.0.0.1", 0).start()
    yield keyring, f"http://127.0.0.1:{server.port}{PATH}"
    server.close()


def independent_decode(url: str, minted: str) -> dict[str, object]:
    """Verify as a third party would: fetch the JWKS over HTTP, pick the key by kid."""
    client = jwt.PyJWKClient(url, cache_jwk_set=False, cache_keys=False)
    key = client.get_signing_key_from_jwt(minted)
    decoded: dict[str, object] = jwt.decode(
        minted, key.key, algorithms=["EdDSA", "ES256"], options={"require": ["exp", "iat"]}
    )
    return decoded


def test_an_eddsa_token_is_byte_for_byte_what_pyjwt_makes(keydir: Path) -> None:
    keyring = Keyring(keydir)
    claims = claims_at(time.time())
    key = keyring.signing_key(claims.issued_at * 1000)
    payload = {
        "session_id": claims.session_id,
        "user_id": claims.user_id,
        "event_id": claims.event_id,
        "iat": claims.issued_at,
        "exp": claims.expires_at,
        "jti": claims.session_id,
        "iss": token.ISSUER,
    }
    expected = jwt.encode(payload, key.private, algorithm="EdDSA", headers={"kid": key.kid})
    assert mint(keyring, claims) == expected


def test_an_eddsa_token_verifies_with_the_jwks_fetched_over_http(
    served: tuple[Keyring, str],
) -> None:
    keyring, url = served
    claims = claims_at(time.time())
    decoded = independent_decode(url, mint(keyring, claims))
    assert decoded["session_id"] == claims.session_id
    assert decoded["user_id"] == "u1"
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert "max-age" in reply.headers["Cache-Control"]
        document = json.load(reply)
    assert [k["kid"] for k in document["keys"]] == keyring.kids
    assert all("d" not in k for k in document["keys"]), "a private part was published"


def test_a_rotation_keeps_old_tokens_valid_and_new_tokens_use_the_new_key(
    served: tuple[Keyring, str], keydir: Path
) -> None:
    keyring, url = served
    old_kid = keyring.kids[0]
    before = mint(keyring, claims_at(time.time() - 60))
    # The new key takes over in the past relative to the next token, after `before` was issued.
    new_path = new_key(keydir, time.time() - 30, "EdDSA", label="next")
    keyring.reload()
    after = mint(keyring, claims_at(time.time()))
    assert jwt.get_unverified_header(before)["kid"] == old_kid
    assert jwt.get_unverified_header(after)["kid"] == new_path.stem
    assert independent_decode(url, before)["user_id"] == "u1"
    assert independent_decode(url, after)["user_id"] == "u1"
    # The same admission is minted the same way whenever it is minted: the key is chosen by iat.
    assert mint(keyring, claims_at(time.time() - 60)) == before
    # A key that takes over later is published now but signs nothing yet.
    future = new_key(keydir, time.time() + HOUR, "EdDSA", label="later")
    keyring.reload()
    assert future.stem in [k["kid"] for k in keyring.jwks()["keys"]]
    assert jwt.get_unverified_header(mint(keyring, claims_at(time.time())))["kid"] != future.stem


def test_a_token_of_an_unknown_kid_is_refused(served: tuple[Keyring, str], tmp_path: Path) -> None:
    keyring, url = served
    stranger = Keyring(new_key(tmp_path / "other", time.time() - HOUR, "EdDSA").parent)
    forged = mint(stranger, claims_at(time.time()))
    verdict = verify_signature(keyring, forged)
    assert not verdict.valid
    assert "unknown key id" in verdict.reason
    with pytest.raises(jwt.PyJWKClientError):
        independent_decode(url, forged)


def test_a_token_signed_by_another_key_under_our_kid_is_refused(
    keydir: Path, tmp_path: Path
) -> None:
    keyring = Keyring(keydir)
    kid = keyring.kids[0]
    impostor_dir = tmp_path / "impostor"
    impostor = new_key(impostor_dir, time.time() - 2 * HOUR, "EdDSA")
    impostor.rename(impostor_dir / f"{kid}.pem")
    forged = mint(Keyring(impostor_dir), claims_at(time.time()))
    assert jwt.get_unverified_header(forged)["kid"] == kid
    assert verify_signature(keyring, forged).reason.startswith("bad signature")


def test_es256_tokens_differ_per_mint_and_same_token_compares_what_was_signed(
    tmp_path: Path,
) -> None:
    keyring = Keyring(new_key(tmp_path / "ec", time.time() - HOUR, "ES256").parent)
    claims = claims_at(time.time())
    first, second = mint(keyring, claims), mint(keyring, claims)
    assert first != second  # ECDSA draws a nonce per signature
    assert verify_signature(keyring, first).valid and verify_signature(keyring, second).valid
    assert same_token(keyring, second, first)
    other = mint(keyring, claims_at(time.time(), user="u2"))
    assert not same_token(keyring, other, first)


def test_full_verify_with_keys_checks_the_session_record(redis_url: str, tmp_path: Path) -> None:
    for algorithm in ("EdDSA", "ES256"):
        keyring = Keyring(new_key(tmp_path / algorithm, time.time() - HOUR, algorithm).parent)

        async def body(s: Scripts, keyring: Keyring = keyring) -> None:
            event_id = f"ev-{keyring.signing_key(0).algorithm}"
            await EventStore(s.redis, s).create(EventConfig(event_id, rate=1000))
            joined = await s.join(event_id, "u1")
            await s.admit(event_id, 10)
            view = (await s.status(event_id, [joined.session_id])).sessions[0]
            assert view.record is not None and view.record.status is Status.READY
            good = token.mint_for(keyring, joined.session_id, event_id, view.record)
            assert (await token.verify(s, keyring, good)).valid
            record = view.record
            claims = admission_claims(
                joined.session_id,
                "someone-else",
                event_id,
                record.admitted_ms,
                record.checkout_deadline_ms,
            )
            forged = mint(keyring, claims)
            verdict = await token.verify(s, keyring, forged)
            assert not verdict.valid and verdict.reason.startswith("forged")
            await s.leave(event_id, joined.session_id)
            verdict = await token.verify(s, keyring, good)
            assert not verdict.valid and verdict.reason.startswith("revoked")

        with_scripts(redis_url, body)


def test_bad_key_files_are_refused_at_start_and_skipped_later(tmp_path: Path) -> None:
    directory = tmp_path / "k"
    directory.mkdir()
    (directory / "not-a-time.pem").write_text("x")
    with pytest.raises(KeyFileError, match="takeover time"):
        Keyring(directory)
    (directory / "not-a-time.pem").unlink()
    with pytest.raises(KeyFileError, match=r"no \*\.pem key"):
        Keyring(directory)
    good = new_key(directory, time.time() - HOUR, "EdDSA")
    keyring = Keyring(directory)
    (directory / "20300101T000000Z.pem").write_text("half-copied")
    keyring.reload()
    assert keyring.kids == [good.stem]
    with pytest.raises(KeyFileError):
        load_key(directory / "20300101T000000Z.pem")


def test_the_api_mints_with_the_keys_and_serves_the_jwks(
    redis_url: str, bootstrap: str, keydir: Path, tmp_path: Path
) -> None:
    from shared.proto import waitroom_pb2, waitroom_pb2_grpc

    jwks_port = free_port()
    env = api_env(
        redis_url,
        bootstrap,
        WAITROOM_JWT_KEY_DIR=str(keydir),
        WAITROOM_JWKS_PORT=str(jwks_port),
        WAITROOM_JWKS_ADDR="127.0.0.1",
    )
    api = launch(env, tmp_path / "api.log")
    try:

        async def admit(s: Scripts) -> str:
            await EventStore(s.redis, s).create(EventConfig("jw", rate=1000))
            return ""

        with_scripts(redis_url, admit)
        with grpc.insecure_channel(api.address) as channel:
            stub = waitroom_pb2_grpc.WaitroomServiceStub(channel)
            joined = stub.JoinQueue(waitroom_pb2.JoinQueueRequest(user_id="u1", event_id="jw"))

            async def step(s: Scripts) -> None:
                await s.admit("jw", 10)

            with_scripts(redis_url, step)
            status = stub.GetQueueStatus(
                waitroom_pb2.GetQueueStatusRequest(session_id=joined.session_id)
            )
        minted = status.checkout_token
        url = f"http://127.0.0.1:{jwks_port}{PATH}"
        assert independent_decode(url, minted)["session_id"] == joined.session_id

        # Another process (the admitter's relay) mints the same token for the record.
        async def record_token(s: Scripts) -> str:
            view = (await s.status("jw", [joined.session_id])).sessions[0]
            assert view.record is not None
            return token.mint_for(Keyring(keydir), joined.session_id, "jw", view.record)

        assert with_scripts(redis_url, record_token) == minted
        header = jwt.get_unverified_header(minted)
        assert header["alg"] == "EdDSA" and header["kid"] == Keyring(keydir).kids[0]
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "from waitroom_cli.main import cli; cli()",
                "token",
                "verify",
                minted,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith("VALID")
    finally:
        assert api.stop() == 0, api.log()
