"""The draw of a scheduled opening: a million entrants drawn without ever blocking Redis.

One Redis, two events filled alike: ``queue`` (no opening: the baseline, bytes per waiting user)
and ``draw`` (an opening: its entrants wait in the pre-queue). Then the opening is moved to now
and the draw runs as the admitter runs it (``waitroom_admitter.draw.DrawRunner``), with SLOWLOG
recording every command: the longest single Redis call is the figure that matters (target
<= 50 ms), with the draw's total time and the bytes per entrant after the draw against the
queue's bytes per user.
"""

from __future__ import annotations

import asyncio
import time

from redis import Redis as SyncRedis
from redis.asyncio import Redis

from bench.fill import create_event, fill, paused_event
from bench.procs import stack
from bench.report import Row
from bench.runner import Options, used_memory
from shared import keys
from shared.events import EventStore
from shared.scripts import DrawScripts, Scripts
from shared.settings import AdmitterSettings
from waitroom_admitter.draw import DrawRunner

TARGET_MS = 50.0
FAR_FUTURE_MS = 4_000_000_000_000


def _bytes_per_user(redis_url: str, event_id: str, users: int, before: int) -> float:
    """Redis memory the event's users added, without the transient outbox (as the relay would
    delete it)."""
    client = SyncRedis.from_url(redis_url)
    try:
        client.delete(keys.outbox(event_id))
    finally:
        client.close()
    return (used_memory(redis_url) - before) / users


async def _draw(redis_url: str, event_id: str, chunk: int) -> tuple[float, int]:
    """Open now and draw; (seconds, script calls)."""
    redis = Redis.from_url(redis_url)
    try:
        scripts = Scripts(redis)
        seconds, micros = await redis.time()
        opens = int(seconds) * 1000 + int(micros) // 1000 + 20
        await EventStore(redis, scripts).update(event_id, opens_ms=opens)
        await asyncio.sleep(0.05)
        runner = DrawRunner(event_id, DrawScripts(scripts), chunk)
        started = time.monotonic()
        assert await runner.run(asyncio.Event()), "the draw did not complete"
        return time.monotonic() - started, runner.calls
    finally:
        await redis.aclose()


def run(opts: Options) -> list[Row]:
    entrants = opts.size(1_000_000, 100_000, minimum=1000)
    chunk = AdmitterSettings().draw_chunk
    with stack(opts.workdir) as st:
        url = st.redis_url
        asyncio.run(create_event(url, paused_event("warmup")))
        fill(url, "warmup", 1000, processes=1)
        asyncio.run(create_event(url, paused_event("queue")))
        before = used_memory(url)
        opts.say(f"draw: {entrants:,} users join a queue (the baseline)")
        queued = fill(url, "queue", entrants, sample_every=entrants)
        queue_bytes = _bytes_per_user(url, "queue", queued.joined, before)
        asyncio.run(create_event(url, paused_event("draw", opens_ms=FAR_FUTURE_MS)))
        before = used_memory(url)
        opts.say(f"draw: {entrants:,} users join the pre-queue")
        drawn = fill(url, "draw", entrants, sample_every=entrants)
        prequeue_bytes = _bytes_per_user(url, "draw", drawn.joined, before)
        client = SyncRedis.from_url(url)
        try:
            client.config_set("slowlog-log-slower-than", 0)  # every command, in microseconds
            client.config_set("slowlog-max-len", 100_000)
            client.slowlog_reset()
            opts.say("draw: drawing")
            seconds, calls = asyncio.run(_draw(url, "draw", chunk))
            log = client.slowlog_get(100_000)
        finally:
            client.close()
        after_bytes = _bytes_per_user(url, "draw", drawn.joined, before)
    longest = max(log, key=lambda e: int(e["duration"]))
    command = longest["command"]
    shown = (command.decode(errors="replace") if isinstance(command, bytes) else str(command))[:40]
    return [
        Row(
            bench="draw",
            name=f"longest Redis call while drawing {drawn.joined:,} entrants (SLOWLOG)",
            figure=int(longest["duration"]) / 1000,
            unit="ms",
            target=f"<= {TARGET_MS:g} ms",
            met=int(longest["duration"]) / 1000 <= TARGET_MS,
            notes={
                "longest_command": shown,
                "commands_logged": len(log),
                "draw_seconds": round(seconds, 3),
                "draw_script_calls": calls,
                "chunk": chunk,
            },
        ),
        Row(
            bench="draw",
            name=f"Redis bytes per entrant after the draw ({drawn.joined:,} drawn)",
            figure=after_bytes,
            unit="B",
            baseline=queue_bytes,
            baseline_name="bytes per user in a queue without a draw",
            target="pre-queue <= queue; + 8 B for the drawn places",
            met=prequeue_bytes <= queue_bytes * 1.02 and after_bytes <= queue_bytes + 12,
            notes={"prequeue_bytes_before_draw": round(prequeue_bytes, 1)},
        ),
    ]
