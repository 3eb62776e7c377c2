"""The faults a chaos run injects, and the schedule that injects them.

Every fault is something that happens to a real deployment: a process killed (-9) and started
again by its supervisor, Redis or the broker frozen (SIGSTOP) and thawed, Redis killed and
restarted from its AOF, the AOF cut back to an earlier size as an OS crash leaves it (the last
second of ``appendfsync everysec`` never reached the disk), and Redis restarted empty. The last
two lose acknowledged writes: only a restore from Kafka (``waitroom recover``) brings them back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.chaos.stack import CLI_CODE, ChaosStack

#: Faults that lose acknowledged writes: they need the recovery from Kafka.
LOSS = ("aof_cut", "redis_empty")
#: Faults the waitroom rides out by itself.
WORKING = (
    "kill_api",
    "pause_redis",
    "kill_admitter",
    "pause_broker",
    "kill_consumer",
    "kill_redis",
)
ALL = (*WORKING, *LOSS)


def parse_faults(text: str) -> list[str]:
    """``all``, ``working``, ``loss`` or a comma-separated list of fault names."""
    groups = {"all": ALL, "working": WORKING, "loss": LOSS, "none": ()}
    if text in groups:
        return list(groups[text])
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise ValueError(f"unknown faults {unknown}; known: {', '.join(ALL)}")
    return names


def recover_command(stack: ChaosStack) -> list[str] | None:
    """``waitroom recover --all --json`` when this tree's ``waitroom`` has the command."""
    help_text = subprocess.run(
        [sys.executable, "-c", CLI_CODE, "--help"],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    has_it = any(line.split()[:1] == ["recover"] for line in help_text.splitlines())
    return [sys.executable, "-c", CLI_CODE, "recover", "--all", "--json"] if has_it else None


@dataclass
class FaultLog:
    """What was injected, when (seconds since the run started), and what came of it."""

    entries: list[dict[str, Any]]

    def add(self, at: float, fault: str, seconds: float, detail: str, result: str) -> None:
        self.entries.append(
            {
                "at": round(at, 2),
                "fault": fault,
                "seconds": round(seconds, 2),
                "detail": detail,
                "result": result,
            }
        )


class Injector:
    """Injects one fault at a time on a stack (blocking: run it off the event loop)."""

    def __init__(
        self,
        stack: ChaosStack,
        *,
        pause_seconds: float,
        recover: list[str] | None,
        clock: Callable[[], float],
    ) -> None:
        self.stack = stack
        self.pause_seconds = pause_seconds
        self.recover = recover
        self.clock = clock
        self.log = FaultLog([])
        self._kills: dict[str, int] = {}

    def inject(self, fault: str) -> None:
        started = self.clock()
        detail, result = getattr(self, f"_{fault}")()
        self.log.add(started, fault, self.clock() - started, detail, result)

    def _kill(self, command: str) -> tuple[str, str]:
        index = self._kills.get(command, 0)
        self._kills[command] = index + 1
        return f"kill -9 {self.stack.kill(command, index)}", "restarted by the supervisor"

    def _kill_api(self) -> tuple[str, str]:
        return self._kill("api")

    def _kill_admitter(self) -> tuple[str, str]:
        return self._kill("admitter")

    def _kill_consumer(self) -> tuple[str, str]:
        return self._kill("consumer")

    def _pause(self, service: str) -> tuple[str, str]:
        target = self.stack.redis if service == "redis" else self.stack.broker
        self.stack.pause(target)
        try:
            time.sleep(self.pause_seconds)
        finally:
            self.stack.resume(target)
        return f"SIGSTOP {service} for {self.pause_seconds:g}s, then SIGCONT", "resumed"

    def _pause_redis(self) -> tuple[str, str]:
        return self._pause("redis")

    def _pause_broker(self) -> tuple[str, str]:
        return self._pause("broker")

    def _kill_redis(self) -> tuple[str, str]:
        self.stack.restart_redis()
        return "kill -9 redis, restart from its AOF", "restarted"

    def _aof_cut(self) -> tuple[str, str]:
        incr = self.stack.incr_file()
        size = incr.stat().st_size
        # The writes of the next moments are the ones an OS crash takes with it.
        time.sleep(self.pause_seconds)
        lost = incr.stat().st_size - size
        self.stack.restart_redis(truncate_to=size)
        return f"kill -9 redis, AOF cut back by {lost:,} bytes", self._recover()

    def _redis_empty(self) -> tuple[str, str]:
        self.stack.restart_redis(empty=True)
        return "kill -9 redis, restart with no data", self._recover()

    def _recover(self) -> str:
        if self.recover is None:
            return "not recoverable yet (no `waitroom recover`)"
        done = subprocess.run(
            self.recover, env=self.stack.env(), capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            return f"waitroom recover exited {done.returncode}: {done.stderr[-300:]}"
        try:
            summary = json.dumps(json.loads(done.stdout), sort_keys=True)[:300]
        except ValueError:
            summary = done.stdout[-300:]
        return f"recovered: {summary}"
