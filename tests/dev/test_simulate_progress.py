"""Why the rehearsal's admissions paused, from one reading of Redis; and the plot's rate line."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from shared.events import EventConfig, EventState, EventStore
from shared.scripts import Scripts
from waitroom_dev.simulate.plot import figure, plot
from waitroom_dev.simulate.progress import Gate, Progress, pause_reason, read_gate

NOW = 1_000_000

FULL = Gate(
    state=EventState.OPEN,
    cap=100,
    rate=50.0,
    in_checkout=100,
    first_lease_ms=NOW + 41_200,
    last_lease_ms=NOW + 59_000,
    now_ms=NOW,
)


def reason(gate: Gate, queue_length: int = 900, arriving: bool = False, admitted: int = 0) -> Any:
    return pause_reason(
        gate, queue_length=queue_length, arriving=arriving, admitted=admitted, seconds=5.0
    )


def test_full_checkout_says_when_the_next_lease_ends() -> None:
    assert reason(FULL) == "checkout full (100/100 held), next lease ends in 41 s"
    assert reason(FULL, admitted=60) == reason(FULL)  # 12/s of the 50/s allowed: held back
    # Admitting at the rate limit (5 s at 50/s): full, but slots are refilled as they free.
    assert reason(FULL, admitted=250) is None


def test_a_paused_event_is_named_before_a_full_checkout() -> None:
    assert reason(replace(FULL, state=EventState.PAUSED)) == (
        "the event is paused (waitroom event resume)"
    )


def test_a_lease_long_past_its_deadline_points_at_the_admitter() -> None:
    stale = replace(FULL, first_lease_ms=NOW - 12_000)
    assert reason(stale) == "a lease ran out 12 s ago and is not reclaimed: no admitter?"
    # Just past its deadline: the next admitter step reclaims it; checkout is simply full.
    assert reason(replace(FULL, first_lease_ms=NOW - 300)) == (
        "checkout full (100/100 held), next lease ends in 0 s"
    )


def test_room_and_a_queue_but_no_admissions_points_at_the_admitter() -> None:
    room = replace(FULL, in_checkout=40)
    assert reason(room) == "room in checkout, yet nobody admitted for 5 s: no admitter?"
    assert reason(room, admitted=3) is None  # admissions flow
    # At 0.1 admissions/s, none in 5 s is what the rate allows: not a stall.
    assert reason(replace(room, rate=0.1)) is None


def test_before_and_just_after_an_opening_nobody_admitted_is_no_stall() -> None:
    room = replace(FULL, in_checkout=0, first_lease_ms=None, last_lease_ms=None)
    assert reason(replace(room, opens_ms=NOW + 15_400)) == (
        "pre-queue: nobody is admitted until the draw at the opening in 15 s"
    )
    assert reason(replace(room, opens_ms=NOW - 1_000)) == (
        "the opening has just passed: the draw places the pre-queue"
    )
    # An interval after the opening with nobody admitted is a stall again.
    assert reason(replace(room, opens_ms=NOW - 6_000)) == (
        "room in checkout, yet nobody admitted for 5 s: no admitter?"
    )


def test_after_the_queue_the_run_waits_for_the_last_checkout() -> None:
    assert reason(FULL, queue_length=0) == (
        "waiting for 100 checkouts to end; the last lease ends in 59 s"
    )
    # While users still arrive, an empty queue is not a stall.
    assert reason(FULL, queue_length=0, arriving=True) is None
    assert reason(replace(FULL, in_checkout=0, first_lease_ms=None, last_lease_ms=None), 0) is None


@given(
    state=st.sampled_from(EventState),
    cap=st.integers(1, 10_000),
    held=st.integers(0, 10_000),
    first=st.none() | st.integers(0, 2 * NOW),
    queue_length=st.integers(0, 10**6),
    admitted=st.integers(0, 1000),
)
def test_any_reading_gives_one_short_line_or_none(
    state: EventState, cap: int, held: int, first: int | None, queue_length: int, admitted: int
) -> None:
    gate = Gate(state, cap, 50.0, held, first, first, NOW)
    text = reason(gate, queue_length=queue_length, admitted=admitted)
    assert text is None or ("\n" not in text and len(text) < 90)
    held_back = admitted < 50.0 * 5.0 / 2  # below half what the rate allows in 5 s
    if queue_length and state is not EventState.PAUSED and held >= cap and held_back:
        assert text is not None and ("checkout full" in text or "no admitter" in text)
    if queue_length and held < cap and admitted and state is not EventState.PAUSED:
        assert text is None or "not reclaimed" in text


def test_the_progress_line_carries_the_reason() -> None:
    progress = Progress(10.0, 2000, 2000, 900, 100, 100, 1000, 0.0, 0.0, "checkout full")
    assert progress.line().endswith("admit 0/s  | checkout full")
    assert "|" not in replace(progress, paused=None).line()


def test_read_gate_sees_the_config_and_the_leases(redis_url: str, event_id: str) -> None:
    async def body() -> tuple[Gate, int]:
        redis = Redis.from_url(redis_url)
        try:
            config = EventConfig(event_id, max_concurrent=2, rate=1000, checkout_ttl_seconds=60)
            await EventStore(redis).create(config)
            scripts = Scripts(redis)
            for user in ("u1", "u2", "u3"):
                await scripts.join(event_id, user)
            admitted = await scripts.admit(event_id, 10)
            assert admitted is not None and admitted.admitted == 2
            await EventStore(redis).set_state(event_id, EventState.PAUSED)
            return await read_gate(redis, event_id), admitted.next_lease_ms
        finally:
            await redis.aclose()

    gate, next_lease_ms = asyncio.run(body())
    assert (gate.state, gate.cap, gate.rate, gate.in_checkout) == (EventState.PAUSED, 2, 1000, 2)
    assert gate.first_lease_ms == next_lease_ms
    assert gate.first_lease_ms is not None and gate.last_lease_ms is not None
    assert 0 < gate.first_lease_ms - gate.now_ms <= 60_000
    assert gate.first_lease_ms <= gate.last_lease_ms
    assert reason(gate, queue_length=1) == "the event is paused (waitroom event resume)"


def _report(rates: list[float], limit: float) -> dict[str, Any]:
    return {
        "event_id": "concert1", "users": 10, "arrival": "burst", "mode": "poll", "clean": True,
        "checkout": {"cap": 5, "rate_limit": limit},
        "series": {"t": [0.0, 1.0], "queue_length": [10, 5], "in_checkout": [5, 5],
                   "admission_rate": rates},
    }  # fmt: skip


def test_the_admissions_panel_draws_the_rate_limit(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = figure(_report([5.0, 3.0], limit=4.0))
    try:
        rate_ax = fig.axes[2]
        lines = {line.get_label(): list(line.get_ydata()) for line in rate_ax.get_lines()}
        assert lines == {"rate limit 4/s": [4.0, 4.0]}
        assert rate_ax.get_ylim()[1] >= 5.0  # the bars above the limit stay in view
    finally:
        plt.close(fig)
    path = tmp_path / "run.png"
    plot(_report([], limit=50.0), path)
    assert path.read_bytes().startswith(b"\x89PNG")
