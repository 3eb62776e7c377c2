import pytest

from shared import keys
from shared.errors import Code, WaitroomError
from shared.ids import event_of_session, event_suffix, new_nonce, ticket_of_session, validate_id
from shared.settings import AdmitterSettings, ApiSettings, CommonSettings, SettingsError, load


def test_session_ids_are_random_url_safe_and_name_their_event() -> None:
    ids = {f"{new_nonce()}.{n}.{event_suffix('concert 1/ü')}" for n in range(1000)}
    assert len({sid.split(".")[0] for sid in ids}) == 1000
    for sid in ids:
        assert all(ch.isalnum() or ch in "-_." for ch in sid)
        assert event_of_session(sid) == "concert 1/ü"
        assert 0 <= ticket_of_session(sid) < 1000


def test_the_longest_event_ids_still_make_readable_session_ids() -> None:
    for event in ("e" * 128, "é" * 128, "😀" * 128):
        validate_id("event_id", event)
        sid = f"{new_nonce()}.{2**63}.{event_suffix(event)}"
        assert event_of_session(sid) == event


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "x",
        "abc.def",
        "A" * 22 + ".1",
        "A" * 22 + ".x.Zm9v",
        "A" * 22 + ".1.",
        "A" * 22 + ".1.???",
    ],
)
def test_malformed_session_ids_are_not_found(bad: str) -> None:
    with pytest.raises(WaitroomError) as err:
        event_of_session(bad)
    assert err.value.code in (Code.SESSION_NOT_FOUND, Code.INVALID_INPUT)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("", "required"), ("x" * 129, "at most 128"), ("a\nb", "control"), ("a\x00", "control")],
)
def test_invalid_ids_are_refused_with_a_clear_message(value: str, fragment: str) -> None:
    with pytest.raises(WaitroomError) as err:
        validate_id("user_id", value)
    assert err.value.code.prefix == "WTR007"
    assert "user_id" in err.value.message and fragment in err.value.message


def test_every_event_key_shares_the_event_hash_tag() -> None:
    builders = [
        keys.config,
        keys.seq,
        keys.head,
        keys.holes,
        keys.sessions,
        keys.users,
        keys.checkout,
        keys.bucket,
        keys.outbox,
        keys.done,
        keys.lock,
    ]
    for build in builders:
        assert build("concert1").startswith("wr:{concert1}:")
    assert len({build("e") for build in builders}) == len(builders)


def test_settings_parse_strictly_and_name_the_variable() -> None:
    assert load(ApiSettings, {}).addr == "0.0.0.0:50051"
    assert load(AdmitterSettings, {"WAITROOM_ADMITTER_SWEEP_SECONDS": "0.5"}).sweep_seconds == 0.5
    assert load(ApiSettings, {"WAITROOM_API_REUSE_PORT": "off"}).reuse_port is False
    with pytest.raises(SettingsError, match="WAITROOM_ADMITTER_BATCH_SIZE"):
        load(AdmitterSettings, {"WAITROOM_ADMITTER_BATCH_SIZE": "lots"})
    with pytest.raises(SettingsError, match=r"WAITROOM_ADMITTER_BATCH_SIZE.*at least 1"):
        load(AdmitterSettings, {"WAITROOM_ADMITTER_BATCH_SIZE": "0"})
    with pytest.raises(SettingsError, match="WAITROOM_API_REUSE_PORT"):
        load(ApiSettings, {"WAITROOM_API_REUSE_PORT": "maybe"})


def test_the_jwt_secret_is_required_and_not_trivial() -> None:
    with pytest.raises(SettingsError, match="WAITROOM_JWT_SECRET"):
        load(CommonSettings, {}).require_secret()
    secret = "s" * 32
    assert load(CommonSettings, {"WAITROOM_JWT_SECRET": secret}).require_secret() == secret
    assert load(CommonSettings, {"WAITROOM_KAFKA_BOOTSTRAP_SERVERS": ""}).kafka_enabled is False
