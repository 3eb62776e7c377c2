"""A sale with a scheduled opening, end to end: admitter processes, Kafka, the CLI's verify."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path

from redis.asyncio import Redis

from shared import draw, keys, outbox
from shared.events import EventState, EventStore
from shared.scripts import Scripts
from shared.sessions import Status
from tests.admitter.admitter_support import (
    WAITROOM,
    Admitters,
    sample_checkout,
    topic_reader,
    wait_for,
)
from tests.fairness.fairness_support import (
    join_all,
    open_now,
    positions,
    scheduled_event,
)

CAP, RATE = 40, 400


async def _checkout(scripts: Scripts, event_id: str, stop: asyncio.Event) -> None:
    """Plays the order service: completes every admitted session shortly after admission."""
    while not stop.is_set():
        for raw in await scripts.redis.zrange(keys.checkout(event_id), 0, -1):
            record = await scripts.redis.hget(keys.sessions(event_id), raw)
            if record is None:
                continue
            nonce = json.loads(record)[2]
            sid = f"{nonce}.{int(raw)}.{scripts._argv(event_id)[2]}"
            await scripts.finish(event_id, sid, Status.COMPLETED, "done")
        await asyncio.sleep(0.01)


def _verify(env: dict[str, str], path: Path, *extra: str) -> tuple[int, dict[str, object]]:
    done = subprocess.run(
        [WAITROOM, "event", "draw", "verify", str(path), "--json", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, json.loads(done.stdout)


def test_2000_before_the_opening_are_drawn_ahead_of_500_after_and_anyone_can_verify(
    redis_url: str,
    event_id: str,
    bootstrap: str,
    admitters: Admitters,
    process_env: dict[str, str],
    tmp_path: Path,
) -> None:
    async def body() -> tuple[list[str], list[str], list[int]]:
        async with Redis.from_url(redis_url) as redis:
            s = Scripts(redis)
            # Paused until every position is read: the draw happens all the same.
            await scheduled_event(
                redis,
                event_id,
                3_600_000,
                max_concurrent=CAP,
                rate=RATE,
                checkout_ttl_seconds=600,
                state=EventState.PAUSED,
            )
            with topic_reader(bootstrap, ["waitroom.draws"], event_id) as reader:
                early = await join_all(s, event_id, [f"early-{i}" for i in range(2000)])
                again = await s.join(event_id, "early-7")  # twice before the opening: one place
                assert again.session_id == early[7] and not again.created
                admitters.start("a1")
                await open_now(redis, event_id)

                async def drawn() -> bool:
                    return bool(await redis.hget(keys.draw(event_id), "drawn_ms"))

                await wait_for(drawn, 60, "the draw")
                late = await join_all(s, event_id, [f"late-{i}" for i in range(500)])
                everyone = early + late
                placed = await positions(s, event_id, everyone)
                stop = asyncio.Event()
                sampler = asyncio.create_task(sample_checkout(redis, event_id, stop))
                checkout = asyncio.create_task(_checkout(s, event_id, stop))
                await EventStore(redis, s).set_state(event_id, EventState.OPEN)

                async def all_done() -> bool:
                    views = []
                    for start in range(0, 2500, 500):
                        views += (await s.status(event_id, everyone[start : start + 500])).sessions
                    return all(v.record and v.record.status is Status.COMPLETED for v in views)

                await wait_for(all_done, 120, "every user through checkout", interval=0.2)
                stop.set()
                samples = await sampler
                await checkout

                async def both_messages() -> bool:
                    return len(reader.distinct("waitroom.draws")) >= 2

                await wait_for(both_messages, 30, "the commitment and the reveal on Kafka")
                messages = [m.body for m in reader.distinct("waitroom.draws").values()]
            admitted_ms = []
            for start in range(0, 2500, 500):
                views = (await s.status(event_id, everyone[start : start + 500])).sessions
                admitted_ms += [v.record.admitted_ms for v in views if v.record]
        assert max(samples) <= CAP, "the cap held"
        committed = [m for m in messages if m["kind"] == "committed"]
        revealed = [m for m in messages if m["kind"] == "revealed"]
        # Committed when scheduled and again when the opening moved (the same seed), then
        # revealed once.
        assert len(committed) == 2 and len(revealed) == 1
        assert {m["commitment"] for m in committed} == {revealed[0]["commitment"]}
        assert draw.commitment(str(revealed[0]["seed"])) == revealed[0]["commitment"]
        assert revealed[0]["entrants"] == 2000
        return early, late, placed + admitted_ms

    early, _late, figures = asyncio.run(body())
    placed, admitted_ms = figures[:2500], figures[2500:]
    # The first 2,000 places are a permutation of the pre-queue, not its join order.
    assert sorted(placed[:2000]) == list(range(1, 2001))
    assert placed[:2000] != list(range(1, 2001))
    # The 500 who joined after the opening follow, in arrival order.
    assert placed[2000:] == list(range(2001, 2501))
    # Admission followed the places (FIFO by place) and the rate.
    by_place = [ms for _, ms in sorted(zip(placed, admitted_ms, strict=True))]
    assert by_place == sorted(by_place)
    assert len(admitted_ms) == 2500 and min(admitted_ms) > 0
    stamps = sorted(admitted_ms)
    burst = max(1, RATE // 10)
    for i, start in enumerate(stamps):
        within = sum(1 for t in stamps[i : i + RATE + burst + 1] if t < start + 1000)
        assert within <= RATE + burst, f"{within} admitted within one second"

    env = dict(process_env)
    exported = tmp_path / "entrants.json"
    done = subprocess.run(
        [WAITROOM, "event", "draw", "export", event_id, "-o", str(exported)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(exported.read_text())
    assert document["sessions"] == early and "user" not in exported.read_text()
    code, report = _verify(env, exported, "--session", early[7])
    assert (code, report["matches"], report["problems"]) == (0, True, [])
    assert report["session"] == {"session_id": early[7], "place": placed[7]}
    assert _verify(env, exported, "--offline")[0] == 0

    # A tampered list (two entrants swapped, or one replaced) or seed is caught.
    swapped = dict(document, sessions=[early[1], early[0], *early[2:]])
    (tmp_path / "swapped.json").write_text(json.dumps(swapped))
    code, report = _verify(env, tmp_path / "swapped.json")
    assert code == 4 and not report["matches"]
    forged = dict(document, sessions=["A" * 22 + early[0][22:], *early[1:]])
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    code, report = _verify(env, tmp_path / "forged.json")
    assert code == 4 and any("differ" in str(p) for p in report["problems"])  # type: ignore[attr-defined]
    code, report = _verify(env, exported, "--seed", "00" * 32)
    assert code == 4 and report["seed_matches_commitment"] is False
    shorter = dict(document, sessions=early[:-1])
    (tmp_path / "shorter.json").write_text(json.dumps(shorter))
    code, report = _verify(env, tmp_path / "shorter.json")
    assert code == 4 and not report["matches"]


def test_an_admitter_killed_in_the_middle_of_a_draw_is_finished_by_the_next_once(
    redis_url: str, event_id: str, admitters: Admitters
) -> None:
    entrants = 40_000
    outbox_only = {"WAITROOM_KAFKA_BOOTSTRAP_SERVERS": "", "WAITROOM_ADMITTER_LOCK_TTL_MS": "1000"}

    async def body() -> None:
        async with Redis.from_url(redis_url) as redis:
            s = Scripts(redis)
            await scheduled_event(redis, event_id, 3_600_000, rate=1000, max_concurrent=10)
            sessions = await join_all(s, event_id, [f"u{i}" for i in range(entrants)])
            # 20 places per call: 2,000 calls, so the kill lands in the middle.
            first = admitters.start("first", WAITROOM_ADMITTER_DRAW_CHUNK="20", **outbox_only)
            await open_now(redis, event_id)

            async def started() -> int:
                return int(await redis.hget(keys.draw(event_id), "written") or 0)

            await wait_for(started, 60, "the draw to start", interval=0.005)
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait(10)
            at_kill = int(await redis.hget(keys.draw(event_id), "written") or 0)
            assert 0 < at_kill < entrants, at_kill
            assert not await redis.hget(keys.draw(event_id), "drawn_ms")
            second = admitters.start("second", WAITROOM_ADMITTER_DRAW_CHUNK="5000", **outbox_only)

            async def drawn() -> bool:
                return bool(await redis.hget(keys.draw(event_id), "drawn_ms"))

            await wait_for(drawn, 60, "the second admitter to finish the draw")
            await asyncio.sleep(0.5)  # let it admit its first users
            seed = (await redis.hget(keys.draw(event_id), "seed")).decode()
            order = draw.unpack(await redis.get(keys.draw_order(event_id))).tolist()
            assert order == draw.permutation(seed, entrants).tolist()
            placed = [p for p in await positions(s, event_id, sessions) if p]
            # Nobody lost, nobody placed twice (the admitted ones have left the queue).
            assert sorted(placed) == list(range(1, len(placed) + 1))
            assert len(placed) >= entrants - 20
            everything = await outbox.read(redis, event_id, entrants + 1000)
            reveals = [
                e
                for e in everything
                if e.topic == "waitroom.draws" and e.fields["kind"] == "revealed"
            ]
            assert len(reveals) == 1
            second.terminate(15)
            # It went on from where the first stopped (a chunk may have landed after the read).
            resumed = second.log().split("resumed at ")[1].split(")")[0]
            assert at_kill <= int(resumed) < entrants

    asyncio.run(body())
