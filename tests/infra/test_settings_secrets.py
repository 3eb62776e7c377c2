"""Secret settings: read from a variable or a file, and never printed by `waitroom settings`."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shared import secrets
from shared import settings as settings_mod
from waitroom_cli.main import cli

SECRET_SETTINGS = [
    "WAITROOM_JWT_SECRET",
    "WAITROOM_KAFKA_SASL_PASSWORD",
    "WAITROOM_KAFKA_SSL_PASSWORD",
    "WAITROOM_REDIS_PASSWORD",
    "WAITROOM_REDIS_SENTINEL_PASSWORD",
]
NEW_SETTINGS = [
    "WAITROOM_KAFKA_SECURITY_PROTOCOL",
    "WAITROOM_KAFKA_SASL_MECHANISM",
    "WAITROOM_KAFKA_SASL_USERNAME",
    "WAITROOM_KAFKA_SASL_PASSWORD",
    "WAITROOM_KAFKA_SSL_CAFILE",
    "WAITROOM_KAFKA_SSL_CERTFILE",
    "WAITROOM_KAFKA_SSL_KEYFILE",
    "WAITROOM_KAFKA_SSL_PASSWORD",
    "WAITROOM_API_TLS_CERTFILE",
    "WAITROOM_API_TLS_KEYFILE",
    "WAITROOM_API_TLS_CLIENT_CAFILE",
    "WAITROOM_API_HEALTH_ADDR",
]


def _clean_env() -> dict[str, str | None]:
    """Unset every WAITROOM_ variable of the test's own environment for the CLI runner."""
    return {name: None for name in os.environ if name.startswith("WAITROOM_")}


def listed(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(cli, ["settings", *args], env={**_clean_env(), **env})
    assert result.exit_code == 0, result.output
    return result.output


def test_a_secret_comes_from_its_variable_or_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("from-the-file\n")
    by_file = {"WAITROOM_KAFKA_SASL_PASSWORD_FILE": str(path)}
    common = settings_mod.load(settings_mod.CommonSettings, by_file)
    assert common.kafka_sasl_password == "from-the-file"  # one trailing line break dropped
    by_variable = {"WAITROOM_KAFKA_SASL_PASSWORD": "from-the-variable"}
    common = settings_mod.load(settings_mod.CommonSettings, by_variable)
    assert common.kafka_sasl_password == "from-the-variable"
    assert settings_mod.load(settings_mod.CommonSettings, {}).kafka_sasl_password == ""


def test_a_secret_file_keeps_everything_but_one_final_line_break(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"  spaced  \n\n")
    found = secrets.read_secret({"S_FILE": str(path)}, "S")
    assert found == secrets.Secret("  spaced  \n", secrets.Source.FILE)


def test_both_the_variable_and_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("x" * 40)
    env = {"WAITROOM_JWT_SECRET": "y" * 40, "WAITROOM_JWT_SECRET_FILE": str(path)}
    with pytest.raises(settings_mod.SettingsError, match="WAITROOM_JWT_SECRET_FILE, not both"):
        settings_mod.load(settings_mod.CommonSettings, env)


def test_an_unreadable_secret_file_names_the_variable(tmp_path: Path) -> None:
    env = {"WAITROOM_JWT_SECRET_FILE": str(tmp_path / "missing")}
    with pytest.raises(settings_mod.SettingsError, match=r"^WAITROOM_JWT_SECRET_FILE='.*missing'"):
        settings_mod.load(settings_mod.CommonSettings, env)


def test_every_new_setting_is_listed_with_its_value() -> None:
    rows = {row["variable"]: row for row in json.loads(listed({}, "--json"))}
    assert set(NEW_SETTINGS) <= set(rows)
    assert {name for name, row in rows.items() if row["secret"]} == set(SECRET_SETTINGS)
    env = {
        "WAITROOM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "WAITROOM_KAFKA_SASL_MECHANISM": "PLAIN",
        "WAITROOM_API_HEALTH_ADDR": ":50052",
    }
    rows = {row["variable"]: row for row in json.loads(listed(env, "--json"))}
    assert rows["WAITROOM_KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    assert rows["WAITROOM_KAFKA_SECURITY_PROTOCOL"]["default"] == "PLAINTEXT"
    assert rows["WAITROOM_API_HEALTH_ADDR"]["value"] == ":50052"
    assert rows["WAITROOM_API_HEALTH_ADDR"]["source"] == "environment"
    assert rows["WAITROOM_KAFKA_SASL_PASSWORD"]["value"] == "(not set)"


_SECRET_TEXT = st.text(
    st.characters(min_codepoint=33, max_codepoint=0x2FFF, exclude_categories=("Cs",)),
    min_size=6,
    max_size=40,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(secret=_SECRET_TEXT, name=st.sampled_from(SECRET_SETTINGS), from_file=st.booleans())
def test_no_secret_is_ever_printed(tmp_path: Path, secret: str, name: str, from_file: bool) -> None:
    baseline = listed({}) + listed({}, "--json")
    assume(secret not in baseline and json.dumps(secret)[1:-1] not in baseline)
    if from_file:
        path = tmp_path / "secret"
        path.write_text(secret, encoding="utf-8")
        env = {name + "_FILE": str(path)}
    else:
        env = {name: secret}
    human, as_json = listed(env), listed(env, "--json")
    for output in (human, as_json):
        assert secret not in output
        assert json.dumps(secret)[1:-1] not in output  # nor escaped, as JSON would write it
    shown = "(from file)" if from_file else "(set)"
    assert re.search(rf"^{name}\s+{re.escape(shown)}\s", human, flags=re.MULTILINE), human
    (row,) = [r for r in json.loads(as_json) if r["variable"] == name]
    assert row["value"] == shown


@pytest.mark.parametrize(
    "url",
    ["redis://default:hunter2-pass@redis:6379/0", "rediss://:hunter2-pass@redis.internal:6380"],
)
def test_a_password_inside_a_url_is_hidden(url: str) -> None:
    output = listed({"WAITROOM_REDIS_URL": url})
    assert "hunter2-pass" not in output
    assert ":***@redis" in output
