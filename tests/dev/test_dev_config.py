"""The dev stack's generated supervisord config and its port choices, without starting anything."""

from __future__ import annotations

import configparser
import socket
from pathlib import Path

import pytest

from waitroom_dev.stack import supervise
from waitroom_dev.stack.options import StackError, StackOptions, choose_ports, program_names


def _program(name: str, env: dict[str, str]) -> supervise.Program:
    return supervise.Program(name, ["/opt/bin/waitroom", name], env, 20, 8)


def test_conf_runs_each_program_with_its_environment(tmp_path: Path) -> None:
    env = {"WAITROOM_JWT_SECRET": 'a%b"c', "WAITROOM_METRICS_PORT": "9401"}
    text = supervise.render_conf(tmp_path, [_program("api", env), _program("admitter-1", env)])
    # supervisord reads it with ConfigParser semantics and its own %-expansion.
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    assert parser.get("program:api", "command") == "/opt/bin/waitroom api"
    assert parser.get("program:admitter-1", "stopasgroup") == "true"
    assert parser.get("program:api", "stopwaitsecs") == "8"
    environment = parser.get("program:api", "environment")
    assert "WAITROOM_JWT_SECRET='a%%b\"c'" in environment  # % doubled, the other quote
    sock = supervise.socket_path(tmp_path)
    assert parser.get("unix_http_server", "file") == str(sock)
    assert parser.get("supervisorctl", "serverurl") == f"unix://{sock}"


def test_supervisor_parses_the_environment_back(tmp_path: Path) -> None:
    from supervisor.datatypes import dict_of_key_value_pairs

    env = {"A": 'x%y"z', "B": "redis://127.0.0.1:1/0", "C": "with space, comma", "D": "back\\slash"}
    text = supervise.render_conf(tmp_path, [_program("api", env)])
    line = next(x for x in text.splitlines() if x.startswith("environment="))
    raw = line.partition("=")[2].replace("%%", "%")  # supervisord's expansion step
    assert dict_of_key_value_pairs(raw) == env
    with pytest.raises(ValueError, match="WAITROOM_JWT_SECRET"):
        supervise.render_conf(tmp_path, [_program("api", {"WAITROOM_JWT_SECRET": "a'b\"c"})])


def test_a_long_state_dir_moves_the_socket_to_the_temp_dir(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    sock = supervise.socket_path(deep)
    assert len(str(sock)) <= 100
    assert sock == supervise.socket_path(deep)  # stable, so another terminal finds it


def test_free_ports_are_distinct_and_named_per_program(tmp_path: Path) -> None:
    ports = choose_ports(StackOptions(state_dir=tmp_path, admitters=3, free_ports=True))
    assert (
        list(ports.metrics)
        == program_names(3)
        == ["api", "admitter-1", "admitter-2", "admitter-3", "consumer"]
    )
    every = [ports.redis, ports.kafka, ports.api, *ports.metrics.values()]
    assert len(set(every)) == len(every)


def test_a_busy_port_is_refused_with_a_hint(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(StackError, match=f"Redis {port}.*--free-ports"):
            choose_ports(StackOptions(state_dir=tmp_path, redis_port=port))
