"""CPU time from /proc: of one process (any process, by pid) and of the whole machine.

Used to say how busy the server, Redis and the load generator were during a measurement, and
how much of the machine something else (another engineer's tests) took meanwhile.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) the process has used so far; 0 once gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            text = f.read()
    except OSError:
        return 0.0
    # The command name (field 2) may hold spaces; the fields after its closing ')' are fixed.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds summed over all cores since boot."""
    with open("/proc/stat", encoding="ascii") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user/nice
    return (total - idle) / _TICK, total / _TICK


@dataclass
class CpuWindow:
    """Cores busy between ``start()`` and ``stop()``: per watched process and machine-wide."""

    pids: dict[str, int]
    started: float = 0.0
    seconds: float = 0.0
    _before: dict[str, float] | None = None
    _busy_before: float = 0.0
    cores: dict[str, float] | None = None
    machine: float = 0.0

    def start(self) -> CpuWindow:
        self.started = time.monotonic()
        self._before = {name: process_cpu(pid) for name, pid in self.pids.items()}
        self._busy_before = machine_busy()[0]
        return self

    def stop(self) -> CpuWindow:
        assert self._before is not None, "start() first"
        self.seconds = max(time.monotonic() - self.started, 1e-9)
        self.cores = {
            name: (process_cpu(pid) - self._before[name]) / self.seconds
            for name, pid in self.pids.items()
        }
        self.machine = (machine_busy()[0] - self._busy_before) / self.seconds
        return self

    def of(self, name: str) -> float:
        assert self.cores is not None, "stop() first"
        return self.cores[name]

    def others(self, known: Iterable[float]) -> float:
        """Cores busy with anything not counted in ``known`` (noise from the shared machine)."""
        return max(0.0, self.machine - sum(known))
