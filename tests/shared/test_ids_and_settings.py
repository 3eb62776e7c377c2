import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import keys
from shared.errors import Code, WaitroomError
from shared.ids import (
    event_of_session,
    event_suffix,
    new_nonce,
    refused_character,
    ticket_of_session,
    validate_id,
)
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
    [
        ("", "required"),
        ("x" * 129, "at most 128"),
        ("a\nb", "control"),
        ("a\x00", "control"),
        ("\u200b", "invisible character (U+200B, Cf)"),
        ("admin\u202e", "invisible character (U+202E, Cf)"),
        ("\ufeff", "invisible character (U+FEFF, Cf)"),
        ("a\u2029", "invisible character (U+2029, Zp)"),
        ("\u3000x", "invisible character (U+3000, Zs)"),
        (" ", "no visible character"),
        ("\u0301\ufe0f", "no visible character"),
    ],
)
def test_invalid_ids_are_refused_with_a_clear_message(value: str, fragment: str) -> None:
    with pytest.raises(WaitroomError) as err:
        validate_id("user_id", value)
    assert err.value.code.prefix == "WTR007"
    assert "user_id" in err.value.message and fragment in err.value.message


REFUSED_CATEGORIES = ["Cc", "Cf", "Cs", "Zl", "Zp"]
ALLOWED_CATEGORIES = [
    *("Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No"),
    *("Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Co", "Cn"),
]


@pytest.mark.parametrize("category", [*REFUSED_CATEGORIES, "Zs"])
@settings(max_examples=50)
@given(data=st.data())
def test_ids_holding_a_refused_character_are_refused_wherever_it_is(
    category: str, data: st.DataObject
) -> None:
    chars = st.characters(categories=[category], exclude_characters=[" "])
    bad = data.draw(chars)
    before, after = data.draw(st.text(max_size=20)), data.draw(st.text(max_size=20))
    with pytest.raises(WaitroomError) as err:
        validate_id("user_id", before + bad + after)
    assert err.value.code is Code.INVALID_INPUT


@pytest.mark.parametrize("category", ALLOWED_CATEGORIES)
@settings(max_examples=50)
@given(data=st.data())
def test_every_other_character_is_allowed_next_to_a_visible_one(
    category: str, data: st.DataObject
) -> None:
    ch = data.draw(st.characters(categories=[category]))
    assert validate_id("user_id", f"u{ch} 1") == f"u{ch} 1"


@given(st.text(max_size=200))
def test_any_text_is_an_id_or_a_clear_wtr007(value: str) -> None:
    try:
        accepted = validate_id("user_id", value)
    except WaitroomError as err:
        assert err.code is Code.INVALID_INPUT
        assert err.message.startswith("WTR007 - user_id ")
        return
    assert accepted == value and 0 < len(value) <= 128
    assert refused_character(value) is None


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


def test_the_metrics_address_is_an_ip_address_named_on_error() -> None:
    assert load(CommonSettings, {}).metrics_addr == "0.0.0.0"
    assert load(CommonSettings, {"WAITROOM_METRICS_ADDR": "::1"}).metrics_addr == "::1"
    with pytest.raises(SettingsError, match="WAITROOM_METRICS_ADDR='metrics"):
        load(CommonSettings, {"WAITROOM_METRICS_ADDR": "metrics.local"})


def test_the_urls_default_to_the_old_services() -> None:
    api = load(ApiSettings, {})
    assert api.checkout_url == "/checkout"
    assert api.websocket_url == "/api/v1/waitroom/stream/{session_id}"
    custom = load(ApiSettings, {"WAITROOM_CHECKOUT_URL": "https://shop.test/c/{session_id}"})
    assert custom.checkout_url == "https://shop.test/c/{session_id}"


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_any_text_as_a_session_id_is_ours_or_not_found_never_a_crash(text: str) -> None:
    from shared.ids import event_of_session, ticket_of_session

    try:
        event = event_of_session(text)
    except WaitroomError:
        return
    assert event and ticket_of_session(text) >= 0


def test_digits_that_are_not_ascii_are_not_a_ticket() -> None:
    from shared.ids import event_of_session

    nonce = "A" * 22
    with pytest.raises(WaitroomError, match="WTR001"):
        event_of_session(f"{nonce}.\u00b2.Y29uY2VydDE")


def test_a_new_session_nonce_never_starts_with_a_dash() -> None:
    """A session id is pasted into commands, where a leading dash would read as an option."""
    from shared.ids import new_nonce

    nonces = [new_nonce() for _ in range(5000)]
    assert not [n for n in nonces if n.startswith("-")]
    assert all(len(n) == 22 for n in nonces)
    assert any(n.startswith("_") for n in nonces)  # the 1-in-64 case still happens
