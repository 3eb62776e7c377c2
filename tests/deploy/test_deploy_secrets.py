"""The Kubernetes base's Secrets for Kafka TLS/SASL and the API's TLS: mounted where the
settings that turn them on (base/secure.env.example) point, empty in the base, and never in
the ConfigMap."""

from __future__ import annotations

import base64
from pathlib import PurePosixPath
from typing import Any

import pytest
from deploy_support import BASE, OVERLAYS, by_kind, render

from shared import settings as settings_mod

EXAMPLE = BASE / "secure.env.example"
KAFKA_USERS = ("waitroom-admitter", "waitroom-consumer")
FILE_SETTINGS = {
    "WAITROOM_KAFKA_SSL_CAFILE": KAFKA_USERS,
    "WAITROOM_KAFKA_SSL_CERTFILE": KAFKA_USERS,
    "WAITROOM_KAFKA_SSL_KEYFILE": KAFKA_USERS,
    "WAITROOM_API_TLS_CERTFILE": ("waitroom-api",),
    "WAITROOM_API_TLS_KEYFILE": ("waitroom-api",),
    "WAITROOM_API_TLS_CLIENT_CAFILE": ("waitroom-api",),
}


def _example() -> dict[str, str]:
    values = {}
    for line in EXAMPLE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def _container(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    deployment = by_kind(objects, "Deployment")[name]
    return dict(deployment["spec"]["template"]["spec"]["containers"][0])


def _mounted_secret_key(objects: list[dict[str, Any]], name: str, path: str) -> tuple[str, str]:
    """(Secret name, key) of the file at ``path`` in deployment ``name``'s container."""
    pod = by_kind(objects, "Deployment")[name]["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    for mount in _container(objects, name)["volumeMounts"]:
        relative = (
            PurePosixPath(path).relative_to(mount["mountPath"])
            if path.startswith(mount["mountPath"] + "/")
            else None
        )
        secret = volumes[mount["name"]].get("secret")
        if relative is None or secret is None:
            continue
        assert mount.get("readOnly") is True, f"{name}: {mount['name']} must be read-only"
        items = {item["path"]: item["key"] for item in secret["items"]}
        assert str(relative) in items, f"{name}: nothing mounted at {path}"
        return secret["secretName"], items[str(relative)]
    raise AssertionError(f"{name}: no Secret is mounted at {path}")


def test_the_example_settings_are_valid_and_hold_no_secret() -> None:
    values = _example()
    settings_mod.load(settings_mod.CommonSettings, values)
    settings_mod.load(settings_mod.ApiSettings, values)
    described = {
        name: secret
        for cls in (settings_mod.CommonSettings, settings_mod.ApiSettings)
        for name, secret in (
            (row["variable"], row["secret"]) for row in settings_mod.effective(cls)[0]
        )
    }
    assert set(values) <= set(described)
    assert not [name for name in values if described[name]], "secrets belong in the Secrets"


@pytest.mark.parametrize("directory", [BASE, *OVERLAYS], ids=lambda p: p.name)
def test_every_file_the_example_names_is_mounted_from_a_secret_that_has_it(directory: Any) -> None:
    objects = render(directory)
    secrets = by_kind(objects, "Secret")
    for setting, path in _example().items():
        for name in FILE_SETTINGS.get(setting, ()):
            secret, key = _mounted_secret_key(objects, name, path)
            assert key in secrets[secret]["data"], f"{setting}: Secret {secret} has no {key}"


@pytest.mark.parametrize("directory", [BASE, *OVERLAYS], ids=lambda p: p.name)
def test_the_sasl_password_comes_from_the_kafka_secret_and_only_kafka_users_get_it(
    directory: Any,
) -> None:
    objects = render(directory)
    secrets = by_kind(objects, "Secret")
    (config,) = by_kind(objects, "ConfigMap").values()
    assert not any("PASSWORD" in name for name in config["data"]), "a password in the ConfigMap"
    for name in by_kind(objects, "Deployment"):
        env = {item["name"]: item for item in _container(objects, name).get("env", [])}
        if name not in KAFKA_USERS:
            assert "WAITROOM_KAFKA_SASL_PASSWORD" not in env, f"{name} talks to no broker"
            continue
        ref = env["WAITROOM_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref["key"] in secrets[ref["name"]]["data"], name


def test_the_base_ships_the_tls_secrets_empty() -> None:
    secrets = by_kind(render(BASE), "Secret")
    for name in ("waitroom-kafka", "waitroom-api-tls"):
        values = {key: base64.b64decode(value) for key, value in secrets[name]["data"].items()}
        assert values and set(values.values()) == {b""}, name
