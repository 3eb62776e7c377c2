"""The faults a chaos run injects, and the schedule that injects them.

Every fault is something that happens to a real deployment: a process killed (-9) and started
again by its supervisor, Redis or the broker frozen (SIGSTOP) and thawed, Redis killed and
restarted from its AOF, the AOF cut back to an earlier size as an OS crash leaves it (the last
second of ``appendfsync everysec`` never reached the disk), and Redis restarted empty. The last
two lose acknowledged writes, and the recovery from Kafka brings back everything Kafka holds:
after the AOF cut the admitters find the event behind its watermark and rebuild it themselves;
after an empty restart the run does what an operator does (automatic rebuild of events Redis
lost entirely is off by default): ``waitroom recover --all --json``. Either way the fault ends
when ``waitroom event show EVENT --json`` reports the recovery ``ok``.
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


#: How long a recovery may take before the fault is logged as not recovered (a bound: a
#: rebuild of this size takes well under a second, a sweep 0.2 s).
RECOVERY_TIMEOUT = 120.0


def waitroom(
    stack: ChaosStack, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run an operator command against the stack, as an operator would."""
    return subprocess.run(
        [sys.executable, "-c", CLI_CODE, *args],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def recovery_state(stack: ChaosStack, event_id: str) -> str:
    """The ``recovery`` state ``waitroom event show --json`` reports (``ok``, ``recovering``,
    ``unchecked``), or why it could not say (the event unknown, Redis not answering)."""
    done = waitroom(stack, "event", "show", event_id, "--json", timeout=60)
    if done.returncode != 0:
        return f"exit {done.returncode}"
    try:
        return str(json.loads(done.stdout)["recovery"]["state"])
    except (ValueError, KeyError, TypeError):
        return "unreadable"


def summarize(report: dict[str, Any]) -> str:
    """One event's ``waitroom recover --json`` report in a line."""
    if report.get("action") != "restored":
        return str(report.get("action"))
    sessions = sum(report.get("sessions", {}).values())
    return (
        f"restored {sessions:,} sessions ({report.get('reason')}); "
        f"{report.get('lost_joins', 0):,} joins lost before Kafka, "
        f"{report.get('skipped_tickets', 0):,} tickets skipped"
    )


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
        event_id: str,
        pause_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        self.stack = stack
        self.event_id = event_id
        self.pause_seconds = pause_seconds
        self.clock = clock
        self.log = FaultLog([])
        self.recoveries: list[dict[str, Any]] = []
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
        marks = self.stack.admitter_log_sizes()
        self.stack.restart_redis(truncate_to=size)
        started = time.monotonic()
        state = self._await_recovery()
        found = self.stack.admitter_log_since(marks, ("is behind Kafka", "rebuilt from Kafka"))
        said = " / ".join(line.split(" guard ", 1)[-1][:220] for line in found) or "no log line"
        result = f"recovery {state} after {time.monotonic() - started:.1f} s; admitters: {said}"
        self.recoveries.append({"fault": "aof_cut", "state": state, "admitters": found})
        return f"kill -9 redis, AOF cut back by {lost:,} bytes", result

    def _redis_empty(self) -> tuple[str, str]:
        self.stack.restart_redis(empty=True)
        started = time.monotonic()
        done = waitroom(self.stack, "recover", "--all", "--json")
        if done.returncode != 0:
            said = f"waitroom recover exited {done.returncode}: {done.stderr[-300:]}"
            reports: list[dict[str, Any]] = []
        else:
            reports = json.loads(done.stdout)["events"]
            mine = [r for r in reports if r.get("event_id") == self.event_id]
            said = "; ".join(summarize(r) for r in mine) or "the event was not recovered"
        state = self._await_recovery()
        result = f"`waitroom recover --all`: {said}; recovery {state} after "
        result += f"{time.monotonic() - started:.1f} s"
        self.recoveries.append({"fault": "redis_empty", "state": state, "reports": reports})
        return "kill -9 redis, restart with no data", result

    def _await_recovery(self) -> str:
        """Wait until ``waitroom event show`` reports the event's recovery ``ok``; returns the
        last state seen (``ok`` unless the bound ran out)."""
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        state = recovery_state(self.stack, self.event_id)
        while state != "ok" and time.monotonic() < deadline:
            time.sleep(0.2)
            state = recovery_state(self.stack, self.event_id)
        return state
