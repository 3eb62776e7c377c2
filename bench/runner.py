"""What every benchmark receives and the small helpers they share."""

from __future__ import annotations

import contextlib
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from bench import load
from bench.cpu import CpuWindow
from bench.load import LoadResult, Plan
from bench.profile import profiled
from bench.report import Row


@dataclass(frozen=True)
class Options:
    """``quick`` shrinks every size and duration for a smoke check (all of them in < 3 min).
    ``scale`` multiplies the sizes further (tests use a tiny scale)."""

    quick: bool = False
    scale: float = 1.0
    workdir: Path | None = None
    verbose: bool = True
    profile_dir: Path | None = None

    def profiled(self, label: str, pids: dict[str, int]) -> contextlib.AbstractContextManager[None]:
        """py-spy on ``pids`` (Python processes only) while the block runs, with --profile."""
        return profiled(self.profile_dir, label, pids)

    def size(self, full: int, quick: int, minimum: int = 1) -> int:
        return max(minimum, round((quick if self.quick else full) * self.scale))

    def seconds(self, full: float, quick: float) -> float:
        return quick if self.quick else full

    def say(self, text: str) -> None:
        """Progress, on stderr so ``--json`` output stays clean."""
        if self.verbose:
            print(f"  [{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


Benchmark = Callable[[Options], list[Row]]


def used_memory(redis_url: str) -> int:
    client = Redis.from_url(redis_url)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, interval: float = 0.01
) -> float:
    """Poll ``check`` until true; returns the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def drive(
    plan: Plan,
    processes: int,
    pids: dict[str, int],
    opts: Options | None = None,
    label: str = "",
    profile: dict[str, int] | None = None,
) -> tuple[LoadResult, CpuWindow]:
    """Run the load ``plan``, counting the CPU of ``pids`` (server, Redis) meanwhile; with
    ``--profile``, the ``profile`` processes are sampled with py-spy during the window."""
    window = CpuWindow(pids)
    with contextlib.ExitStack() as stack:

        def start() -> None:
            if opts is not None and profile:
                stack.enter_context(opts.profiled(label, profile))
            window.start()

        result = load.run(plan, processes, during=start)
        window.stop()
    return result, window


def cpu_notes(window: CpuWindow, client_cpu: float) -> dict[str, float]:
    """Cores busy per watched process, and what else (other work on the machine) took."""
    assert window.cores is not None
    notes = {f"{name}_cpu": round(cores, 2) for name, cores in window.cores.items()}
    notes["other_cpu"] = round(window.others([*window.cores.values(), client_cpu]), 2)
    return notes


def rpc_buckets(metrics_port: int, method: str) -> dict[float, float]:
    """Cumulative counts of ``waitroom_rpc_duration_seconds`` buckets for ``method`` (code OK),
    scraped from a process's /metrics: the server's own view of its latency."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
        text = reply.read().decode("utf-8")
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "waitroom_rpc_duration_seconds_bucket"
                and labels.get("method", "").endswith(f"/{method}")
                and labels.get("code") == "OK"
            ):
                buckets[float(labels["le"])] = sample.value
    return buckets


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Upper bound (seconds) of the bucket holding quantile ``q`` (0..1) of the calls made
    between two scrapes; inf when it lies past the last finite bucket."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if not total:
        return 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= q * total:
            return bound
    return float("inf")
