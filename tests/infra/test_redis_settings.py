"""The WAITROOM_REDIS_* settings without servers: each bad combination names its variable,
anything from the environment either builds options or is a SettingsError, secrets are never
printed, and the failure rule counts cluster redirections as outages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from redis.exceptions import (
    AskError,
    ClusterCrossSlotError,
    ClusterDownError,
    ClusterError,
    MovedError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)

from shared.backoff import is_transient
from shared.redis_config import Mode, redis_options
from shared.redis_modes import NotReplicated
from shared.settings import CommonSettings, SettingsError, load


def options(**env: str) -> object:
    return redis_options(load(CommonSettings, env))


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"WAITROOM_REDIS_MODE": "replicated"}, "WAITROOM_REDIS_MODE"),
        ({"WAITROOM_REDIS_URL": "http://127.0.0.1:6379"}, "WAITROOM_REDIS_URL"),
        ({"WAITROOM_REDIS_MODE": "sentinel"}, "WAITROOM_REDIS_SENTINELS"),
        (
            {"WAITROOM_REDIS_MODE": "sentinel", "WAITROOM_REDIS_SENTINELS": "127.0.0.1:26379"},
            "WAITROOM_REDIS_MASTER_NAME",
        ),
        (
            {"WAITROOM_REDIS_MODE": "sentinel", "WAITROOM_REDIS_SENTINELS": "127.0.0.1"},
            "WAITROOM_REDIS_SENTINELS",
        ),
        (
            {"WAITROOM_REDIS_MODE": "cluster", "WAITROOM_REDIS_URL": "redis://127.0.0.1:7000/3"},
            "WAITROOM_REDIS_URL",
        ),
        (
            {"WAITROOM_REDIS_MODE": "cluster", "WAITROOM_REDIS_CLUSTER_NODES": "a:b"},
            "WAITROOM_REDIS_CLUSTER_NODES",
        ),
        ({"WAITROOM_REDIS_TLS_CA_FILE": "/etc/hostname"}, "WAITROOM_REDIS_TLS_CA_FILE"),
        (
            {
                "WAITROOM_REDIS_URL": "rediss://127.0.0.1:6379/0",
                "WAITROOM_REDIS_TLS_CERT_FILE": "/etc/hostname",
            },
            "WAITROOM_REDIS_TLS_KEY_FILE",
        ),
        (
            {
                "WAITROOM_REDIS_URL": "rediss://127.0.0.1:6379/0",
                "WAITROOM_REDIS_TLS_CA_FILE": "/nonexistent/ca.pem",
            },
            "WAITROOM_REDIS_TLS_CA_FILE",
        ),
        (
            {"WAITROOM_REDIS_PASSWORD": "a", "WAITROOM_REDIS_PASSWORD_FILE": "/etc/hostname"},
            "WAITROOM_REDIS_PASSWORD_FILE",
        ),
        ({"WAITROOM_REDIS_PASSWORD_FILE": "/nonexistent/pw"}, "WAITROOM_REDIS_PASSWORD_FILE"),
        ({"WAITROOM_REDIS_WAIT_REPLICAS": "-1"}, "WAITROOM_REDIS_WAIT_REPLICAS"),
        ({"WAITROOM_REDIS_WAIT_TIMEOUT_MS": "0"}, "WAITROOM_REDIS_WAIT_TIMEOUT_MS"),
    ],
)
def test_each_bad_combination_names_its_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        options(**env)


def test_the_modes_and_secrets_come_out_as_configured(tmp_path: Path) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text("from-a-file\n")
    built = redis_options(
        load(
            CommonSettings,
            {
                "WAITROOM_REDIS_MODE": "Sentinel",
                "WAITROOM_REDIS_URL": "redis://ignored/2",
                "WAITROOM_REDIS_SENTINELS": "10.0.0.1:26379, 10.0.0.2:26380",
                "WAITROOM_REDIS_MASTER_NAME": "tickets",
                "WAITROOM_REDIS_PASSWORD_FILE": str(secret_file),
                "WAITROOM_REDIS_WAIT_REPLICAS": "2",
            },
        )
    )
    assert built.mode is Mode.SENTINEL
    assert built.seeds == [("10.0.0.1", 26379), ("10.0.0.2", 26380)]
    assert built.connection["password"] == "from-a-file"
    assert built.connection["db"] == 2
    assert built.durability.replicas == 2
    assert "from-a-file" not in repr(built) + built.where


@example(mode="cluster", url="redis://[", nodes="")
@example(mode="standalone", url="redis://h:99999/0", nodes="")
@example(mode="sentinel", url="rediss://u:p@h/x", nodes=":1,,")
@given(
    mode=st.sampled_from(["standalone", "cluster", "sentinel", "Cluster", ""]) | st.text(),
    url=st.text(),
    nodes=st.text(),
)
def test_anything_in_the_environment_builds_or_is_a_settings_error(
    mode: str, url: str, nodes: str
) -> None:
    env = {
        "WAITROOM_REDIS_MODE": mode,
        "WAITROOM_REDIS_URL": url,
        "WAITROOM_REDIS_CLUSTER_NODES": nodes,
        "WAITROOM_REDIS_SENTINELS": nodes,
        "WAITROOM_REDIS_MASTER_NAME": "m",
    }
    try:
        built = options(**env)
    except SettingsError:
        return
    assert built is not None


def test_secrets_are_never_printed(tmp_path: Path) -> None:
    secret = "hunter2-but-longer"
    assert secret not in repr(CommonSettings(redis_password=secret))
    env = {
        **os.environ,
        "WAITROOM_REDIS_PASSWORD": secret,
        "WAITROOM_REDIS_SENTINEL_PASSWORD": secret,
    }
    code = "from waitroom_cli.main import cli; cli()"
    for args in (["settings"], ["settings", "--json"]):
        result = subprocess.run(
            [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert secret not in result.stdout + result.stderr
    rows = {r["variable"]: r for r in json.loads(result.stdout)}
    for name in ("WAITROOM_REDIS_PASSWORD", "WAITROOM_REDIS_SENTINEL_PASSWORD"):
        assert rows[name]["secret"] and rows[name]["default"] == ""


@pytest.mark.parametrize(
    "error",
    [
        MovedError("3999 127.0.0.1:6381"),
        AskError("3999 127.0.0.1:6381"),
        TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot"),
        ClusterDownError("CLUSTERDOWN The cluster is down"),
        ClusterError("TTL exhausted."),
        SlotNotCoveredError("Slot 3999 is not covered by the cluster."),
        ResponseError("MOVED 3999 127.0.0.1:6381"),
        NotReplicated("NOREPLICAS 0 of 1 replicas acknowledged the write within 500 ms"),
    ],
)
def test_cluster_redirections_and_too_few_replicas_are_outages(error: Exception) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        ClusterCrossSlotError("CROSSSLOT Keys in request don't hash to the same slot"),
        ResponseError("ERR user_script:12: Script attempted to access nonexistent global"),
    ],
)
def test_a_cross_slot_command_or_a_script_error_is_a_bug(error: Exception) -> None:
    assert not is_transient(error)
