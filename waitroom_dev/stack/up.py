"""``waitroom dev up``'s stack: start, watch and stop the whole waitroom on one machine.

Starts Redis and the Tansu broker, creates the topics and a demo event, and runs the API, the
admitters and the consumer under supervisord. Everything it starts is its own child (in its
own session, so a terminal's Ctrl-C reaches only ``dev up``), and ``stop`` takes it all down
in order: the waitroom processes drain first, while Redis and the broker still answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from shared import settings as settings_mod
from shared.connections import default_topics, ensure_topics, redis_client
from shared.errors import Code, WaitroomError
from shared.events import EventConfig, EventStore
from shared.settings import CommonSettings, ConsumerSettings
from shared.timefmt import now_ms
from waitroom_dev.services import Service, ServiceError, broker_service, redis_service
from waitroom_dev.stack import supervise
from waitroom_dev.stack.options import (
    DEV_GRACE_SECONDS,
    DEV_KAFKA_CLIENT,
    READY_TIMEOUT,
    Ports,
    StackError,
    StackOptions,
    choose_ports,
    program_names,
)
from waitroom_dev.stack.state import StackState, alive, wait_gone


def waitroom_command() -> str:
    """The ``waitroom`` script of this interpreter (not a version manager's shim)."""
    beside = shutil.which("waitroom", path=str(Path(sys.executable).parent))
    found = beside or shutil.which("waitroom")
    if not found:
        raise StackError("the `waitroom` command is not installed: pip install -e '.[dev]'")
    return found


def api_healthy(target: str, timeout: float = 1.0) -> bool:
    """The API answers the contract's HealthCheck."""
    import grpc

    from shared.proto import waitroom_pb2, waitroom_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = waitroom_pb2_grpc.WaitroomServiceStub(channel)
        try:
            stub.HealthCheck(waitroom_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
    return True


class DevStack:
    """Redis, the broker and supervisord with the waitroom's processes, owned by this process."""

    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.state_dir = options.state_dir.resolve()
        self.hurry = threading.Event()  # a second signal: stop without waiting for drains
        self.redis: Service | None = None
        self.kafka: Service | None = None
        self.supervisord: subprocess.Popen[bytes] | None = None
        self.state: StackState | None = None
        self.program_pids: dict[str, int] = {}
        self.topics_created: list[str] = []
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        running = sum(1 for pid in self.program_pids.values() if alive(pid))
        return f"DevStack(state_dir={str(self.state_dir)!r}, programs_running={running})"

    @property
    def secret_path(self) -> Path:
        """Where a generated JWT secret is kept (absent when WAITROOM_JWT_SECRET was given)."""
        return self.state_dir / "jwt-secret"

    # --- start ----------------------------------------------------------------------------

    def start(self) -> StackState:
        """Start everything and write the state file; the caller waits with ``wait_ready``."""
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        ports = choose_ports(self.options)
        try:
            self.redis = redis_service(self.state_dir, ports.redis).start()
            self.kafka = broker_service(self.state_dir, ports.kafka).start()
        except ServiceError as exc:
            raise StackError(str(exc)) from None
        secret = os.environ.get("WAITROOM_JWT_SECRET", "")
        if not secret:
            secret = secrets.token_urlsafe(32)
            # Operator commands (`waitroom token verify`) need it too; the banner says where.
            _write_private(self.secret_path, secret + "\n")
        common = CommonSettings(
            redis_url=f"redis://127.0.0.1:{ports.redis}/0",
            kafka_bootstrap_servers=f"127.0.0.1:{ports.kafka}",
            jwt_secret=secret,
        )
        self.state = StackState(
            pid=os.getpid(),
            state_dir=str(self.state_dir),
            event_id=self.options.event_id,
            api_target=f"127.0.0.1:{ports.api}",
            redis_url=common.redis_url,
            redis_pid=self.redis.pid or 0,
            bootstrap=common.kafka_bootstrap_servers,
            kafka_pid=self.kafka.pid or 0,
            supervisord_pid=0,
            conf=str(self.state_dir / "supervisord.conf"),
            socket=str(supervise.socket_path(self.state_dir)),
            metrics=dict(ports.metrics),
            kafka_client={k: int(_env(k, v)) for k, v in DEV_KAFKA_CLIENT.items()},
            started_ms=now_ms(),
        )
        self.state.save()  # from here on, `dev down` can find whatever is running
        self.topics_created = ensure_topics(
            common, default_topics(settings_mod.load(ConsumerSettings), self.options.partitions)
        )
        self._create_event(common)
        conf = Path(self.state.conf)
        programs = self._programs(common, ports)
        _write_private(conf, supervise.render_conf(self.state_dir, programs))  # holds the secret
        self.supervisord = self._start_supervisord(conf)
        self.state.supervisord_pid = self.supervisord.pid
        self.state.save()
        return self.state

    def _create_event(self, common: CommonSettings) -> None:
        options = self.options
        config = EventConfig(
            options.event_id,
            max_concurrent=options.max_concurrent,
            rate=options.rate,
            checkout_ttl_seconds=options.checkout_ttl,
        ).validate()

        async def go() -> None:
            client = redis_client(common)
            try:
                store = EventStore(client)
                try:
                    await store.get(config.event_id)
                except WaitroomError as exc:
                    if exc.code is not Code.EVENT_NOT_FOUND:
                        raise
                    await store.create(config)
            finally:
                await client.aclose()

        asyncio.run(go())

    def _programs(self, common: CommonSettings, ports: Ports) -> list[supervise.Program]:
        base = {
            "WAITROOM_REDIS_URL": common.redis_url,
            "WAITROOM_KAFKA_BOOTSTRAP_SERVERS": common.kafka_bootstrap_servers,
            "WAITROOM_JWT_SECRET": common.jwt_secret,
            "WAITROOM_API_ADDR": f"127.0.0.1:{ports.api}",
            # One API process: a stale API from another run must not share its port silently.
            "WAITROOM_API_REUSE_PORT": "false",
            "WAITROOM_LOG_LEVEL": _env("WAITROOM_LOG_LEVEL", "INFO"),
        }
        base |= {name: _env(name, value) for name, value in DEV_KAFKA_CLIENT.items()}
        for process in ("API", "ADMITTER", "CONSUMER"):
            name = f"WAITROOM_{process}_GRACE_SECONDS"
            base[name] = _env(name, DEV_GRACE_SECONDS)
        exe = waitroom_command()
        stop_wait = DEV_GRACE_SECONDS + 5
        programs = []
        # supervisord starts low priorities first and stops high ones first: the API stops
        # taking joins before the admitters and the consumer go.
        for name in program_names(self.options.admitters):
            kind = name.partition("-")[0]
            priority = {"consumer": 10, "admitter": 20, "api": 30}[kind]
            env = {**base, "WAITROOM_METRICS_PORT": str(ports.metrics[name])}
            if kind == "consumer":
                del env["WAITROOM_JWT_SECRET"]  # it never signs or checks a token
            programs.append(supervise.Program(name, [exe, kind], env, priority, stop_wait))
        return programs

    def _start_supervisord(self, conf: Path) -> subprocess.Popen[bytes]:
        out = (self.state_dir / "logs" / "supervisord.out").open("ab")
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(conf)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.state_dir,
                start_new_session=True,
            )
        finally:
            out.close()

    def wait_ready(self, stop: threading.Event, timeout: float = READY_TIMEOUT) -> bool:
        """Wait until every program runs and the API answers; False if ``stop`` was set first."""
        assert self.state is not None
        client = supervise.SupervisorClient(Path(self.state.socket))
        deadline = time.monotonic() + timeout
        waiting = "supervisord"
        while not stop.is_set():
            problem = self.dead_component()
            if problem:
                raise StackError(problem)
            with contextlib.suppress(OSError):
                infos = client.processes()
                self.program_pids = {p.name: p.pid for p in infos if p.pid}
                for info in infos:
                    if info.state == "FATAL":
                        raise StackError(self._program_failure(info.name))
                pending = [p.name for p in infos if not p.running]
                waiting = ", ".join(pending) if pending else "the API's HealthCheck"
                if not pending and api_healthy(self.state.api_target):
                    return True
            if time.monotonic() >= deadline:
                raise StackError(f"not ready after {timeout:g}s: waiting for {waiting}")
            stop.wait(0.2)
        return False

    def _program_failure(self, name: str) -> str:
        path = supervise.log_path(self.state_dir, name)
        tail = supervise.log_tail(path)
        return f"{name} keeps exiting; last lines of {path}:\n{tail}"

    # --- watch ----------------------------------------------------------------------------

    def dead_component(self) -> str | None:
        """Why the stack cannot go on (Redis, the broker or supervisord died), or None."""
        for service in (self.redis, self.kafka):
            if service is not None and not service.running:
                return f"{service.name} exited; see {service.log_path}"
        if self.supervisord is not None and self.supervisord.poll() is not None:
            log = self.state_dir / "logs" / "supervisord.out"
            return f"supervisord exited; last lines of {log}:\n{supervise.log_tail(log)}"
        return None

    def check_programs(self) -> list[str]:
        """Warnings, once each, for programs that supervisord gave up on."""
        if self.state is None:
            return []
        try:
            infos = supervise.SupervisorClient(Path(self.state.socket)).processes()
        except OSError:
            return []
        self.program_pids.update({p.name: p.pid for p in infos if p.pid})
        warnings = []
        for info in infos:
            if info.state == "FATAL" and info.name not in self._warned:
                self._warned.add(info.name)
                warnings.append(self._program_failure(info.name))
        return warnings

    # --- stop -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything this stack started, drains first; then remove the state file."""
        self._stop_supervisord()
        for service in (self.kafka, self.redis):
            if service is not None:
                if self.hurry.is_set():
                    service.kill()
                else:
                    service.stop()
        if self.state is not None:
            self.state.remove()

    def _stop_supervisord(self) -> None:
        proc, self.supervisord = self.supervisord, None
        if proc is not None and proc.poll() is None:
            # Refresh the pids first: killing leftovers after a hurried stop needs them.
            self.check_programs()
            proc.send_signal(signal.SIGTERM)
            # supervisord stops its programs one priority group at a time.
            groups = self.options.admitters + 2
            deadline = time.monotonic() + 5 + (DEV_GRACE_SECONDS + 5) * groups
            while proc.poll() is None and time.monotonic() < deadline and not self.hurry.is_set():
                time.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        # supervisord gives each program its own process group; make sure none outlives it.
        leftovers = [pid for pid in self.program_pids.values() if alive(pid)]
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        wait_gone(leftovers, 5.0)


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, from the first byte on."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def _env(name: str, default: object) -> str:
    return os.environ.get(name) or str(default)
