"""A rehearsal's scheduled opening: setting it, when users arrive around it, reading the draw.

The opening is the waitroom's own feature (``waitroom event create|update --opens-at``); the
rehearsal only sets one on a fresh event (``--opens-in``), or uses the event's, and afterwards
reads back what the draw did and has the operator's commands check it: ``waitroom event draw
export`` then ``verify``, run in-process through the CLI, so the rehearsal checks the draw the
way anyone would.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from shared import draw, keys
from shared.audit import Actor
from shared.events import EventStore
from waitroom_dev.simulate.model import DrawOutcome

# Pre-opening arrivals are spread over this share of the time left before the opening, so the
# last of them still lands in the pre-queue after a slow join (a join took up to 0.9 s at p99
# in the 2,000-user rehearsal of docs/rehearsal.md); later arrivals start this long after the
# opening, so a client clock a little ahead of Redis's does not put them in the pre-queue.
BEFORE_SPAN = 0.8
AFTER_MARGIN_SECONDS = 0.2


async def redis_now_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def schedule(redis: Redis, event_id: str, opens_in: float) -> int:
    """Give ``event_id`` an opening ``opens_in`` seconds from now by Redis's clock (the clock
    the scripts decide with); returns it in ms.

    Raises:
        Refused: the event already has users queued, or its opening has passed.
    """
    opens_ms = await redis_now_ms(redis) + round(opens_in * 1000)
    await EventStore(redis).update(event_id, Actor.program("simulate"), opens_ms=opens_ms)
    return opens_ms


def arrival_offsets(
    users: int, before: int, opens_in: float | None, arrival: str, rate: float
) -> list[float]:
    """When each user arrives, in seconds from the start of the run.

    Without an opening: everyone at 0 (``burst``) or one every 1/``rate`` s (``ramp``). With
    one ``opens_in`` seconds ahead: the first ``before`` users spread evenly over the first
    ``BEFORE_SPAN`` of that time (a crowd gathering before a sale), the rest from just after
    the opening, all at once or at ``rate``.
    """
    if opens_in is None:
        return [0.0 if arrival == "burst" else i / rate for i in range(users)]
    span = max(0.0, opens_in) * BEFORE_SPAN
    early = [span * i / before for i in range(before)] if before else []
    start = max(0.0, opens_in) + AFTER_MARGIN_SECONDS
    late = [start + (0.0 if arrival == "burst" else i / rate) for i in range(users - before)]
    return early + late


async def read_draw(redis: Redis, event_id: str, opens_ms: int) -> DrawOutcome:
    """The draw as the waitroom holds it (no verification: see ``verify``)."""
    info = await EventStore(redis).draw_info(event_id)
    raw = await redis.get(keys.draw_rank(event_id))
    ranks = draw.unpack(raw if isinstance(raw, bytes) else b"").tolist()
    return DrawOutcome(
        opens_ms=opens_ms,
        entrants=info.entrants if info else None,
        drawn_ms=info.drawn_ms if info else 0,
        ranks=ranks,
        verify={},
    )


def verify(redis_url: str, event_id: str) -> dict[str, Any]:
    """``waitroom event draw export`` and ``waitroom event draw verify --json``, in-process;
    the verify report, or ``{"matches": False, "problems": [what failed]}``.

    Blocking (each command runs its own event loop): call it from a thread.
    """
    from click.testing import CliRunner

    from waitroom_cli.main import cli

    runner = CliRunner()
    with tempfile.TemporaryDirectory(prefix="waitroom-simulate-") as where:
        path = Path(where) / "entrants.json"
        base = ["--redis-url", redis_url, "event", "draw"]
        exported = runner.invoke(cli, [*base, "export", event_id, "--output", str(path)])
        if exported.exit_code != 0:
            return _failed("export", exported.stderr or exported.output)
        checked = runner.invoke(cli, [*base, "verify", str(path), "--json"])
    try:
        report: dict[str, Any] = json.loads(checked.stdout)
    except ValueError:
        return _failed("verify", checked.stderr or checked.output)
    report["exit_code"] = checked.exit_code
    return report


def _failed(step: str, output: str) -> dict[str, Any]:
    last = output.strip().splitlines()[-1:] or ["no output"]
    return {"matches": False, "problems": [f"draw {step} failed: {last[0]}"]}
