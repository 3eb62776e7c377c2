"""The stack a chaos run breaks: Redis with an AOF, the broker, and every waitroom process.

Redis runs with ``appendonly yes``, ``appendfsync everysec`` in a directory of its own, so it can
be killed and restarted from its AOF, have the AOF cut back as an OS crash would leave it, or be
restarted empty. The waitroom processes (two APIs sharing one port with SO_REUSEPORT, three
admitters, one consumer) are started as an operator would start them and watched as a
supervisor would: a process that exits is started again, and the exit is logged as the
schedule's doing (a kill it ordered) or as a crash (anything else), which the invariants count.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from shared.kafka import TOPIC_PARTITIONS, default_topics, ensure_topics
from shared.settings import CommonSettings, ConsumerSettings
from waitroom_dev.services import Service, broker_service, free_port, redis_service

JWT_SECRET = "chaos-secret-0123456789abcdef-0123"
CLI_CODE = "from waitroom_cli.main import cli; cli()"

#: The AOF's directory inside Redis's ``--dir`` (Redis 7: a base file, incr files, a manifest).
AOF_DIR = "appendonlydir"


@dataclass
class Exit:
    """How one run of a process ended."""

    name: str
    pid: int
    code: int | None
    cause: str  # "killed" (by the schedule), "crashed" (by itself), "stopped" (at the end)
    log_tail: str = ""


@dataclass
class Worker:
    """One waitroom process slot: restarted whenever its process ends during the run."""

    name: str
    command: str
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    expected_exit: bool = False

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", CLI_CODE, self.command],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.starts += 1
        self.expected_exit = False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class ChaosStack:
    """Redis, the broker and the waitroom processes of one chaos run, on free ports."""

    workdir: Path
    apis: int = 2
    admitters: int = 3
    consumers: int = 1
    redis: Service = field(init=False)
    broker: Service = field(init=False)
    api_port: int = field(init=False)
    workers: list[Worker] = field(default_factory=list)
    exits: list[Exit] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.redis_dir = self.workdir / "redis"
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        self.redis = redis_service(self.redis_dir, durable=True)
        # everysec is Redis's default; it is spelled out because the AOF scenarios depend on
        # it. No automatic rewrite, so the incr file we measure is the one Redis appends to.
        self.redis.args += ["--appendfsync", "everysec", "--auto-aof-rewrite-percentage", "0"]
        self.broker = broker_service(self.workdir)
        self.api_port = free_port()

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis.port}/0"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker.port}"

    @property
    def api_address(self) -> str:
        return f"127.0.0.1:{self.api_port}"

    def env(self) -> dict[str, str]:
        """Settings of every waitroom process: short timings so a run takes seconds."""
        env = dict(os.environ)
        env.update(
            {
                "WAITROOM_REDIS_URL": self.redis_url,
                "WAITROOM_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "WAITROOM_JWT_SECRET": JWT_SECRET,
                # The Tansu broker makes a group join wait half the session timeout.
                "WAITROOM_KAFKA_SESSION_TIMEOUT_MS": "2000",
                "WAITROOM_KAFKA_HEARTBEAT_INTERVAL_MS": "600",
                "WAITROOM_KAFKA_FETCH_MAX_WAIT_MS": "50",
                "WAITROOM_KAFKA_REQUEST_TIMEOUT_MS": "5000",
                "WAITROOM_ADMITTER_SWEEP_SECONDS": "0.2",
                "WAITROOM_ADMITTER_LOCK_TTL_MS": "1500",
                "WAITROOM_ADMITTER_GRACE_SECONDS": "5",
                "WAITROOM_CONSUMER_GRACE_SECONDS": "5",
                "WAITROOM_API_GRACE_SECONDS": "2",
                "WAITROOM_API_STREAM_POLL_SECONDS": "1",
                "WAITROOM_API_ADDR": self.api_address,
                "WAITROOM_API_REUSE_PORT": "true",
                "WAITROOM_METRICS_PORT": "0",
                "WAITROOM_LOG_LEVEL": "INFO",
            }
        )
        return env

    def start(self) -> None:
        """Start the servers, create the topics, then every waitroom process."""
        self.redis.start()
        self.broker.start()
        settings = CommonSettings(kafka_bootstrap_servers=self.bootstrap)
        ensure_topics(settings, default_topics(ConsumerSettings(), TOPIC_PARTITIONS), explicit=True)
        env = self.env()
        for kind, count in (("api", self.apis), ("admitter", self.admitters)):
            for i in range(count):
                self._add(f"{kind}-{i}", kind, env)
        for i in range(self.consumers):
            self._add(f"consumer-{i}", "consumer", env)

    def _add(self, name: str, command: str, env: dict[str, str]) -> None:
        env = dict(env)
        if command == "admitter":
            env["WAITROOM_ADMITTER_REPLICA_ID"] = name
        if command == "consumer":
            env["WAITROOM_CONSUMER_REPLICA_ID"] = name
        worker = Worker(name, command, env, self.workdir / f"{name}.log")
        worker.start()
        self.workers.append(worker)

    def wait_ready(self, timeout: float) -> None:
        """Wait until each process says it is ready (the API listens, the consumer is
        assigned, the admitter started); a process that exits meanwhile fails the run."""
        ready = {"api": "listening on", "admitter": "admitter ", "consumer": "assigned"}
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            while ready[worker.command] not in worker.tail(200):
                assert worker.proc is not None
                if worker.proc.poll() is not None:
                    raise RuntimeError(f"{worker.name} exited at start:\n{worker.tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{worker.name} not ready in {timeout:g}s:\n{worker.tail()}")
                time.sleep(0.05)

    # --- the supervisor ---------------------------------------------------------------------

    def supervise(self) -> list[str]:
        """Restart every process that ended; returns the names of those that crashed."""
        crashed = []
        for worker in self.workers:
            assert worker.proc is not None
            code = worker.proc.poll()
            if code is None:
                continue
            cause = "killed" if worker.expected_exit else "crashed"
            tail = "" if worker.expected_exit else worker.tail()
            self.exits.append(Exit(worker.name, worker.pid, code, cause, tail))
            if cause == "crashed":
                crashed.append(worker.name)
            worker.start()
        return crashed

    def kill(self, command: str, index: int) -> str:
        """kill -9 the ``index``-th process of a kind (the supervisor restarts it)."""
        kind = [w for w in self.workers if w.command == command]
        worker = kind[index % len(kind)]
        proc = worker.proc
        assert proc is not None
        # Marked before the signal: the supervisor, seeing the exit, must know it was ordered.
        worker.expected_exit = True
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return f"{worker.name} pid {proc.pid}"

    def stop_all(self) -> None:
        """SIGTERM every process and record how each exited (0 is a clean drain)."""
        for worker in self.workers:
            assert worker.proc is not None
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        for worker in self.workers:
            assert worker.proc is not None
            try:
                code = worker.proc.wait(20)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                code = worker.proc.wait()
            cause = "stopped" if code == 0 else "crashed"
            tail = "" if code == 0 else worker.tail()
            self.exits.append(Exit(worker.name, worker.pid, code, cause, tail))

    def shutdown(self) -> None:
        """Whatever happened: nothing started here is left running or stopped."""
        for service in (self.redis, self.broker):
            if service.proc is not None and service.proc.poll() is None:
                service.proc.send_signal(signal.SIGCONT)
        for worker in self.workers:
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait()
        self.broker.stop()
        self.redis.stop()

    def admitter_log_sizes(self) -> dict[Path, int]:
        """Where each admitter's log ends now (see ``admitter_log_since``)."""
        return {
            w.log_path: w.log_path.stat().st_size if w.log_path.exists() else 0
            for w in self.workers
            if w.command == "admitter"
        }

    def admitter_log_since(self, sizes: dict[Path, int], words: tuple[str, ...]) -> list[str]:
        """Lines the admitters logged since ``sizes`` that contain one of ``words``."""
        found = []
        for path, size in sizes.items():
            with path.open("rb") as f:
                f.seek(size)
                text = f.read().decode("utf-8", "replace")
            found += [line for line in text.splitlines() if any(w in line for w in words)]
        return found

    # --- Redis and the broker -----------------------------------------------------------------

    def pause(self, service: Service) -> None:
        assert service.proc is not None
        service.proc.send_signal(signal.SIGSTOP)

    def resume(self, service: Service) -> None:
        assert service.proc is not None
        service.proc.send_signal(signal.SIGCONT)

    def incr_file(self) -> Path:
        """The AOF file Redis appends to now (the manifest's ``type i`` entry)."""
        manifest = next((self.redis_dir / AOF_DIR).glob("*.manifest"))
        for line in manifest.read_text().splitlines():
            parts = line.split()
            entry = dict(zip(parts[::2], parts[1::2], strict=False))
            if entry.get("type") == "i":
                return self.redis_dir / AOF_DIR / entry["file"]
        raise RuntimeError(f"no incr file in {manifest}")

    def restart_redis(self, *, truncate_to: int | None = None, empty: bool = False) -> None:
        """kill -9 Redis, optionally cut its AOF back or remove it, and start it again."""
        incr = self.incr_file()
        self.redis.kill()
        if truncate_to is not None:
            os.truncate(incr, truncate_to)
        if empty:
            shutil.rmtree(self.redis_dir / AOF_DIR)
        # A reload of a large AOF takes a while; the port opens only once it is loaded.
        self.redis.start(timeout=60)
