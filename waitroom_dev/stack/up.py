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
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from shared import settings as settings_mod
from shared.connections import redis_client
from shared.errors import Code, WaitroomError
from shared.events import EventConfig, EventStore
from shared.kafka import default_topics, ensure_topics
from shared.settings import CommonSettings, ConsumerSettings
from shared.timefmt import now_ms
from waitroom_dev.services import (
    Service,
    ServiceError,
    broker_service,
    die_with_parent,
    redis_service,
)
from waitroom_dev.stack import supervise
from waitroom_dev.stack.options import (
    DEV_GRACE_SECONDS,
    DEV_KAFKA_CLIENT,
    READY_TIMEOUT,
    StackError,
    StackOptions,
    choose_ports,
)
from waitroom_dev.stack.programs import env_or, supervised_programs
from waitroom_dev.stack.state import StackState, alive, end_groups


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
            orphans_die = self.options.die_with_parent
            redis = redis_service(self.state_dir, ports.redis)
            self.redis = replace(redis, die_with_parent=orphans_die).start()
            kafka = broker_service(self.state_dir, ports.kafka)
            self.kafka = replace(kafka, die_with_parent=orphans_die).start()
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
            kafka_client={k: int(env_or(k, v)) for k, v in DEV_KAFKA_CLIENT.items()},
            started_ms=now_ms(),
        )
        self.state.save()  # from here on, `dev down` can find whatever is running
        self.topics_created = ensure_topics(
            common,
            default_topics(settings_mod.load(ConsumerSettings), self.options.partitions),
            explicit=True,
        )
        self._create_event(common)
        conf = Path(self.state.conf)
        programs = supervised_programs(self.options, common, ports)
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

    def _start_supervisord(self, conf: Path) -> subprocess.Popen[bytes]:
        # SIGTERM, not SIGKILL: supervisord then stops its programs before it exits.
        arm = die_with_parent(signal.SIGTERM) if self.options.die_with_parent else None
        out = (self.state_dir / "logs" / "supervisord.out").open("ab")
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(conf)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.state_dir,
                start_new_session=True,
                preexec_fn=arm,
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
                self._note_pids(infos)
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
        self._note_pids(infos)
        warnings = []
        for info in infos:
            if info.state == "FATAL" and info.name not in self._warned:
                self._warned.add(info.name)
                warnings.append(self._program_failure(info.name))
        return warnings

    def _note_pids(self, infos: list[supervise.ProcessInfo]) -> None:
        """Keep the programs' pids, in the state file too: should supervisord die unseen, they
        are how ``dev down`` and the next ``dev up`` find the programs it left."""
        self.program_pids.update({p.name: p.pid for p in infos if p.pid})
        if self.state is not None and self.state.programs != self.program_pids:
            self.state.programs = dict(self.program_pids)
            self.state.save()

    # --- stop -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything this stack started, drains first; then remove the state file.

        Should one step fail, the next ones still run; the state file then stays behind, so
        ``dev down`` or the next ``dev up`` can finish the job.
        """
        try:
            self._stop_supervisord()
        finally:
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
        end_groups([pid for pid in self.program_pids.values() if alive(pid)], grace=0)


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, from the first byte on."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
