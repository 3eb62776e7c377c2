"""``waitroom event draw``: publish a scheduled opening's entrants and check its draw.

``export`` writes the public entrant list: the pre-queue's session ids (random, known to their
owners; no user ids) in ticket order, with the commitment and, once drawn, the seed.
``verify`` recomputes every entrant's place from the seed and that list alone
(``shared.draw``), checks the seed against the commitment, and compares with what the waitroom
did (the places in Redis and the session records), unless ``--offline``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from shared import draw, keys
from shared.cli import RET_INVALID, common_settings, emit, fail, json_option, with_redis
from shared.events import EventStore
from shared.ids import event_suffix
from shared.scripts import Scripts

#: Records read per HMGET while exporting a large pre-queue.
EXPORT_BATCH = 2000


@click.group(name="draw")
def draw_group() -> None:
    """Publish and verify the draw of a scheduled opening."""


async def _entrants(scripts: Scripts, event_id: str, n: int) -> list[str]:
    """Session ids of tickets 1..n ('' where the record is gone: purged after retention)."""
    suffix = event_suffix(event_id)
    out = []
    for start in range(1, n + 1, EXPORT_BATCH):
        wanted = list(range(start, min(n, start + EXPORT_BATCH - 1) + 1))
        raws = await scripts.redis.hmget(keys.sessions(event_id), wanted)
        for ticket, raw in zip(wanted, raws, strict=True):
            out.append(f"{json.loads(raw)[2]}.{ticket}.{suffix}" if raw else "")
    return out


@draw_group.command(name="export")
@click.argument("event_id")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File (default: stdout).",
)
def export(event_id: str, output: Path | None) -> None:
    """Write EVENT_ID's public entrant list (JSON) for anyone to verify the draw with."""

    async def go(scripts: Scripts) -> dict[str, Any]:
        info = await EventStore(scripts.redis, scripts).draw_info(event_id)
        if info is None:
            fail(f"event {event_id!r} has no scheduled opening")
        if info.entrants is None:
            fail(f"the pre-queue of {event_id!r} is still open: its entrants are not final yet")
        return {
            "event_id": event_id,
            "scheme": draw.SCHEME,
            "commitment": info.commitment,
            "seed": info.seed,
            "entrants": info.entrants,
            "sessions": await _entrants(scripts, event_id, info.entrants),
        }

    document = with_redis(go)
    text = json.dumps(document, indent=1)
    if output is None:
        click.echo(text)
    else:
        output.write_text(text + "\n", encoding="utf-8")
        missing = document["sessions"].count("")
        click.echo(
            f"wrote {document['entrants']} entrants of {event_id} to {output}"
            + (f" ({missing} records already purged)" if missing else ""),
            err=True,
        )


def _read(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(document, dict) or not isinstance(document.get("sessions"), list):
            raise ValueError("no 'sessions' list")
        return document
    except (OSError, ValueError) as exc:
        fail(f"cannot read the entrant list {path}: {exc}")


@draw_group.command()
@click.argument("entrants", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--seed", default=None, help="The revealed seed (hex); default: the file's.")
@click.option("--offline", is_flag=True, help="Only recompute from the file; do not ask Redis.")
@click.option("--session", "session_id", default=None, help="Also print this session's place.")
@json_option
def verify(
    entrants: Path, seed: str | None, offline: bool, session_id: str | None, as_json: bool
) -> None:
    """Recompute every place from the seed and ENTRANTS (an export), check the commitment, and
    say whether the waitroom placed everyone so."""
    if not offline:
        common_settings()  # a bad setting is named before any work, as by every command
    document = _read(entrants)
    event_id = str(document.get("event_id", ""))
    sessions = [str(s) for s in document["sessions"]]
    seed = seed if seed is not None else str(document.get("seed", ""))
    commitment = str(document.get("commitment", ""))
    problems = draw.list_problems(sessions)
    try:
        seed_ok = bool(seed) and draw.commitment(seed) == commitment
    except ValueError:
        seed_ok = False
    if not seed_ok:
        problems.insert(0, "the seed does not match the commitment (or was not revealed yet)")
    places: list[int] = []
    if seed_ok:
        places = draw.ranks(draw.permutation(seed, len(sessions))).tolist()
    if not offline and event_id:
        problems += with_redis(lambda s: _compare(s, event_id, commitment, sessions, places))
    report: dict[str, Any] = {
        "event_id": event_id,
        "entrants": len(sessions),
        "seed_matches_commitment": seed_ok,
        "checked_against_waitroom": not offline,
        "matches": not problems,
        "problems": problems,
    }
    if session_id is not None:
        index = sessions.index(session_id) if session_id in sessions else -1
        report["session"] = {
            "session_id": session_id,
            "place": places[index] if index >= 0 and places else None,
        }
    lines = [
        f"draw of {event_id}: {len(sessions)} entrants, scheme {document.get('scheme', '?')}",
        f"  seed matches commitment   {'yes' if seed_ok else 'NO'}",
    ]
    if not offline:
        lines.append(f"  waitroom placed the same  {'yes' if not problems else 'NO'}")
    if "session" in report:
        lines.append(f"  place of {session_id}: {report['session']['place']}")
    lines += [f"  problem: {p}" for p in problems]
    emit(as_json, report, "\n".join(lines))
    sys.exit(0 if not problems else RET_INVALID)


async def _compare(
    scripts: Scripts, event_id: str, commitment: str, sessions: list[str], places: list[int]
) -> list[str]:
    """Differences between the recomputed draw and what the waitroom holds."""
    info = await EventStore(scripts.redis, scripts).draw_info(event_id)
    if info is None:
        return [f"the waitroom has no draw for {event_id!r}"]
    problems = []
    if info.commitment != commitment:
        problems.append("the list's commitment is not the one the waitroom published")
    if info.entrants != len(sessions):
        problems.append(f"the waitroom drew {info.entrants} entrants, the list has {len(sessions)}")
        return problems
    held = await _entrants(scripts, event_id, len(sessions))
    changed = [i + 1 for i, (a, b) in enumerate(zip(held, sessions, strict=True)) if a and a != b]
    if changed:
        problems.append(
            f"{len(changed)} entries differ from the waitroom's, e.g. ticket {changed[0]}"
        )
    if not info.drawn_ms:
        problems.append("the waitroom has not finished its draw")
    elif places:
        raw = await scripts.redis.get(keys.draw_rank(event_id))
        done = draw.unpack(raw if isinstance(raw, bytes) else b"").tolist()
        wrong = sum(1 for a, b in zip(done, places, strict=False) if a != b) + abs(
            len(done) - len(places)
        )
        if wrong:
            problems.append(f"{wrong} entrants were placed differently by the waitroom")
    return problems
