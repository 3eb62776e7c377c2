"""What ``waitroom dev up`` was asked for, and the ports and settings the stack runs with."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from shared.kafka import TOPIC_PARTITIONS
from waitroom_dev.services import free_port

# Tansu makes a consumer-group join wait half the session timeout, so the dev stack uses short
# consumer timeouts (Apache Kafka would refuse a session under 6 s; Tansu does not).
DEV_KAFKA_CLIENT = {
    "WAITROOM_KAFKA_SESSION_TIMEOUT_MS": 2000,
    "WAITROOM_KAFKA_HEARTBEAT_INTERVAL_MS": 600,
    "WAITROOM_KAFKA_FETCH_MAX_WAIT_MS": 50,
}
# A developer's Ctrl-C should not wait production drain times.
DEV_GRACE_SECONDS = 3
READY_TIMEOUT = 60.0


class StackError(RuntimeError):
    """The stack could not start, or part of it died."""


@dataclass(frozen=True)
class StackOptions:
    """What ``waitroom dev up`` was asked for."""

    state_dir: Path
    event_id: str = "concert1"
    max_concurrent: int = 100
    rate: float = 50.0
    checkout_ttl: float = 60.0
    admitters: int = 2
    partitions: int = TOPIC_PARTITIONS
    redis_port: int = 6379
    kafka_port: int = 9092
    api_port: int = 50051
    metrics_port: int = 9400
    free_ports: bool = False
    #: Redis, the broker and supervisord die with ``dev up`` even when it is killed (Linux).
    #: False behaves as on a platform without that, where only the state file is left to
    #: clean up from; tests use it to leave a stack's processes behind on purpose.
    die_with_parent: bool = True


@dataclass(frozen=True)
class Ports:
    redis: int
    kafka: int
    api: int
    metrics: dict[str, int]  # program name -> port


def program_names(admitters: int) -> list[str]:
    return ["api", *(f"admitter-{i}" for i in range(1, admitters + 1)), "consumer"]


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def choose_ports(options: StackOptions) -> Ports:
    """Free ports for everything, or the requested ones after checking nobody holds them."""
    names = program_names(options.admitters)
    if options.free_ports:
        picked: set[int] = set()
        while len(picked) < 3 + len(names):
            picked.add(free_port())
        redis, kafka, api, *metrics = sorted(picked)
        return Ports(redis, kafka, api, dict(zip(names, metrics, strict=True)))
    ports = Ports(
        options.redis_port,
        options.kafka_port,
        options.api_port,
        {name: options.metrics_port + i for i, name in enumerate(names)},
    )
    wanted = {"Redis": ports.redis, "Kafka": ports.kafka, "gRPC API": ports.api}
    wanted |= {f"{name} metrics": port for name, port in ports.metrics.items()}
    busy = [f"{what} {port}" for what, port in wanted.items() if not _port_free(port)]
    if busy:
        raise StackError(f"port in use: {', '.join(busy)}; choose others or pass --free-ports")
    return ports
