"""Profiling a benchmark's server processes with py-spy while it measures (``--profile DIR``).

py-spy samples the process from outside (no code change, little overhead with
``--nonblocking``) and writes collapsed stacks; ``summary`` turns them into the functions where
the time goes, by own time and including callees. py-spy is a profiling tool only: install it
with ``pip install py-spy`` when you want profiles; the benchmarks run without it.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

RATE_HZ = 100


@contextlib.contextmanager
def profiled(directory: Path | None, label: str, pids: dict[str, int]) -> Iterator[None]:
    """Record each of ``pids`` while the block runs, to ``directory/label-name.txt``, and
    write a ``.summary.txt`` beside each; does nothing without a directory."""
    if directory is None:
        yield
        return
    spy = shutil.which("py-spy")
    if spy is None:
        raise RuntimeError("--profile needs py-spy: pip install py-spy")
    directory.mkdir(parents=True, exist_ok=True)
    running = []
    for name, pid in pids.items():
        out = directory / f"{label}-{name}.txt"
        args = [spy, "record", "--nonblocking", "-r", str(RATE_HZ), "-f", "raw"]
        args += ["-o", str(out), "-p", str(pid)]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        running.append((proc, out))
    try:
        yield
    finally:
        for proc, _ in running:
            proc.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
        for proc, out in running:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if out.exists():
                out.with_suffix(".summary.txt").write_text(summary(out), "utf-8")


def summary(path: Path, top: int = 30) -> str:
    """The functions with the most samples: own time, then including what they call."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text("utf-8", "replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return "no samples\n"
    lines = [f"{total} samples", "", "own time:"]
    lines += [f"{100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["", "including callees:"]
    lines += [f"{100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top + 20)]
    return "\n".join(lines) + "\n"
