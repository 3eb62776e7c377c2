"""The draw at a scheduled opening, run by the admitter that owns the event.

The permutation is a pure function of the committed seed and the number of entrants
(``shared.draw``), so any admitter computes the same one: the draw is written in chunks, each
one atomic script that only appends where the written part ends, and an admitter killed in the
middle leaves the next owner to recompute the permutation and write the rest. Nobody is lost or
placed twice, and the seed is revealed once, by the script that marks the draw done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from array import array

from shared import draw, metrics
from shared.scripts import DrawScripts

log = logging.getLogger(__name__)


class DrawRunner:
    """Runs (or resumes) one event's draw to its end."""

    def __init__(self, event_id: str, draws: DrawScripts, chunk: int) -> None:
        self.event_id = event_id
        self.draws = draws
        self.chunk = chunk
        self.calls = 0
        self._cached: tuple[str, int, array[int], array[int]] | None = None

    async def _arrays(self, seed: str, n: int) -> tuple[array[int], array[int]]:
        if self._cached is None or self._cached[:2] != (seed, n):
            # In a thread: 0.3 s for a million entrants would otherwise stall lock renewals.
            order = await asyncio.to_thread(draw.permutation, seed, n)
            rank = await asyncio.to_thread(draw.ranks, order)
            self._cached = (seed, n, order, rank)
        return self._cached[2], self._cached[3]

    async def run(self, stopping: asyncio.Event) -> bool:
        """Write what is left of the draw and complete it; False if it stopped before the end
        (``stopping``), or there is nothing to draw yet."""
        started = time.monotonic()
        progress = await self.draws.begin(self.event_id)
        if progress.stage != "DRAW":
            return progress.stage == "DONE"
        n, written = progress.entrants, progress.written
        order, rank = await self._arrays(progress.seed, n)
        resumed = written
        while written < n:
            if stopping.is_set():
                return False
            k = min(self.chunk, n - written)
            part = slice(written, written + k)
            now = await self.draws.write(
                self.event_id, written + 1, draw.pack(order[part]), draw.pack(rank[part])
            )
            self.calls += 1
            if now == written:  # not ours to write (another owner, or done): look again
                progress = await self.draws.begin(self.event_id)
                if progress.stage != "DRAW":
                    return progress.stage == "DONE"
                now = progress.written
            written = now
        while True:
            stage, _ = await self.draws.finish(self.event_id, self.chunk)
            self.calls += 1
            if stage == "DONE":
                metrics.DRAWS.labels(self.event_id).inc()
                break
            if stage == "WRITING" or stopping.is_set():
                return False
        log.info(
            "drew %d entrants of %s in %.2f s (%d calls%s)",
            n,
            self.event_id,
            time.monotonic() - started,
            self.calls,
            f", resumed at {resumed}" if resumed else "",
        )
        return True

    def __repr__(self) -> str:
        return f"DrawRunner({self.event_id!r}, calls={self.calls})"
