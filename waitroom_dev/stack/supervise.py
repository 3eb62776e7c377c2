"""The supervisord side of the dev stack: write its config and ask it what runs.

supervisord runs the waitroom's own processes (API, admitters, consumer); the dev stack starts
it as a child and talks to it over the XML-RPC unix socket the config declares.
"""

from __future__ import annotations

import hashlib
import http.client
import shlex
import tempfile
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A unix socket path must fit in sockaddr_un (108 bytes on Linux, with the NUL).
_MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class Program:
    """One ``[program:NAME]`` section: a waitroom subcommand with its own environment."""

    name: str
    command: list[str]
    env: dict[str, str]
    priority: int
    stop_wait_seconds: int


@dataclass(frozen=True)
class ProcessInfo:
    """What supervisord says about one of its programs."""

    name: str
    state: str
    pid: int
    description: str

    @property
    def running(self) -> bool:
        return self.state == "RUNNING"


def socket_path(state_dir: Path) -> Path:
    """The control socket: in the state dir, or under the temp dir when that path is too long."""
    path = state_dir.resolve() / "supervisor.sock"
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"waitroom-dev-{digest}.sock"


def _env_value(name: str, value: str) -> str:
    """A value for ``environment=``: supervisord splits it with a non-POSIX shlex (quotes, no
    escapes) after its own ``%`` expansion, so quote with whichever quote the value lacks."""
    for quote in ('"', "'"):
        if quote not in value:
            escaped = value.replace("%", "%%")
            if escaped.startswith(("'", '"')) or escaped.endswith(("'", '"')):
                break  # supervisord strips quote characters off both ends of every value
            return f"{quote}{escaped}{quote}"
    raise ValueError(f"{name} holds a value supervisord cannot carry: {value!r}")


def _command(args: list[str]) -> str:
    """``command=`` is split with POSIX shlex after ``%`` expansion."""
    return " ".join(shlex.quote(arg).replace("%", "%%") for arg in args)


def render_conf(state_dir: Path, programs: list[Program]) -> str:
    """A complete ``supervisord.conf`` running ``programs`` with logs under ``state_dir/logs``.

    Raises ValueError for an environment value supervisord's parser cannot carry.
    """
    state_dir = state_dir.resolve()
    logs = state_dir / "logs"
    lines = [
        "; Written by `waitroom dev up`; rewritten at every start.",
        "[unix_http_server]",
        f"file={socket_path(state_dir)}",
        "chmod=0700",
        "",
        "[supervisord]",
        f"logfile={logs / 'supervisord.log'}",
        f"pidfile={state_dir / 'supervisord.pid'}",
        f"childlogdir={logs}",
        "logfile_maxbytes=10MB",
        "loglevel=info",
        "nodaemon=true",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{socket_path(state_dir)}",
    ]
    for program in programs:
        env = ",".join(f"{k}={_env_value(k, v)}" for k, v in sorted(program.env.items()))
        lines += [
            "",
            f"[program:{program.name}]",
            f"command={_command(program.command)}",
            f"environment={env}",
            f"priority={program.priority}",
            # Each process drains on SIGTERM within its grace period; supervisord waits that long
            # before SIGKILL, and signals the whole process group so no child is orphaned.
            "stopsignal=TERM",
            f"stopwaitsecs={program.stop_wait_seconds}",
            "stopasgroup=true",
            "killasgroup=true",
            "autostart=true",
            "autorestart=true",
            "startsecs=1",
            "startretries=3",
            "redirect_stderr=true",
            f"stdout_logfile={logs / (program.name + '.log')}",
            "stdout_logfile_maxbytes=10MB",
            "stdout_logfile_backups=1",
        ]
    return "\n".join(lines) + "\n"


def log_path(state_dir: Path, program: str) -> Path:
    return state_dir.resolve() / "logs" / f"{program}.log"


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class SupervisorClient:
    """supervisord's XML-RPC interface over its unix socket."""

    def __init__(self, sock: Path) -> None:
        self.sock = sock

    def __repr__(self) -> str:
        return f"SupervisorClient(sock={str(self.sock)!r})"

    def _proxy(self) -> Any:
        from supervisor.xmlrpc import SupervisorTransport

        # A fresh transport per call: after a failed request (supervisord still starting) the
        # old one's HTTP connection is unusable ("Request-sent").
        transport = SupervisorTransport(None, None, serverurl=f"unix://{self.sock}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def processes(self) -> list[ProcessInfo]:
        """Every program, in config order; raises OSError when supervisord does not answer."""
        try:
            rows = self._proxy().supervisor.getAllProcessInfo()
        except xmlrpc.client.Fault as exc:
            raise OSError(f"supervisord refused: {exc.faultString}") from None
        except http.client.HTTPException as exc:
            raise OSError(f"supervisord does not answer: {exc!r}") from None
        return [
            ProcessInfo(
                name=str(row["name"]),
                state=str(row["statename"]),
                pid=int(row["pid"]),
                description=str(row["description"]),
            )
            for row in rows
        ]
