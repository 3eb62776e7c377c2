"""``waitroom dev status``: ask a running dev stack how it is."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Any

from waitroom_dev.stack import supervise
from waitroom_dev.stack.state import StackState, alive


def _redis_answers(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _port_answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 1):
        return True
    return False


def collect(state: StackState) -> dict[str, Any]:
    """Liveness of every part of the stack, as JSON-ready data; ``healthy`` sums it up."""
    processes: list[dict[str, Any]] = []
    supervisor_answers = True
    try:
        infos = supervise.SupervisorClient(Path(state.socket)).processes()
    except OSError:
        infos, supervisor_answers = [], False
    for info in infos:
        processes.append(
            {
                "name": info.name,
                "state": info.state,
                "pid": info.pid or None,
                "description": info.description,
                "metrics_port": state.metrics.get(info.name),
            }
        )
    parts: dict[str, dict[str, Any]] = {
        "dev_up": {"pid": state.pid, "alive": alive(state.pid)},
        "supervisord": {"pid": state.supervisord_pid, "alive": supervisor_answers},
        "redis": {
            "pid": state.redis_pid,
            "url": state.redis_url,
            "alive": _redis_answers(state.redis_url),
        },
        "kafka": {
            "pid": state.kafka_pid,
            "bootstrap": state.bootstrap,
            "alive": _port_answers(state.bootstrap),
        },
    }
    healthy = all(p["alive"] for p in parts.values()) and bool(processes)
    healthy = healthy and all(p["state"] == "RUNNING" for p in processes)
    return {
        "state_dir": state.state_dir,
        "event_id": state.event_id,
        "api": state.api_target,
        "healthy": healthy,
        **parts,
        "processes": processes,
    }


def describe(report: dict[str, Any]) -> str:
    def up(part: dict[str, Any]) -> str:
        return "up" if part["alive"] else "DOWN"

    lines = [
        f"dev stack in {report['state_dir']}: {'healthy' if report['healthy'] else 'NOT HEALTHY'}",
        f"  dev up       pid {report['dev_up']['pid']}  {up(report['dev_up'])}",
        f"  supervisord  pid {report['supervisord']['pid']}  {up(report['supervisord'])}",
        f"  redis        {report['redis']['url']}  {up(report['redis'])}",
        f"  kafka        {report['kafka']['bootstrap']}  {up(report['kafka'])}",
        f"  gRPC API     {report['api']}   demo event {report['event_id']}",
    ]
    for p in report["processes"]:
        metrics = f"metrics :{p['metrics_port']}" if p["metrics_port"] else ""
        lines.append(f"  {p['name']:<12} {p['state']:<9} {p['description']:<28} {metrics}")
    return "\n".join(lines)
