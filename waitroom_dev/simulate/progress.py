"""The rehearsal's live progress: what one line shows, why admissions paused, and the terminal.

A 2,000-user rehearsal takes minutes and, halfway, can look stalled: checkout is full of users
who never answer, and their slots free only when their leases run out. ``pause_reason`` says so
from one reading of Redis (a ``Gate``): a pure function, so each case is tested on crafted input.
"""

from __future__ import annotations

from dataclasses import dataclass

import click
from redis.asyncio import Redis

from shared import keys
from shared.events import EventConfig, EventState

# A lease past its deadline by more than this has not been reclaimed by an admitter step (they
# run at least every few hundred ms while anyone is in checkout), so no admitter is running.
OVERDUE_SECONDS = 5.0


@dataclass(frozen=True)
class Gate:
    """What decides admissions at one instant, as read from Redis (times in Redis' clock, ms)."""

    state: EventState
    cap: int  # most users in checkout at once
    rate: float  # most admissions per second
    in_checkout: int
    first_lease_ms: int | None  # earliest checkout deadline; None: nobody in checkout
    last_lease_ms: int | None  # latest checkout deadline
    now_ms: int
    opens_ms: int = 0  # scheduled opening; 0: none


async def read_gate(redis: Redis, event_id: str) -> Gate:
    """The event's config and its checkout leases, in one round trip."""
    checkout = keys.checkout(event_id)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.config(event_id))
        pipe.zcard(checkout)
        pipe.zrange(checkout, 0, 0, withscores=True)
        pipe.zrange(checkout, -1, -1, withscores=True)
        pipe.time()
        raw, held, first, last, (seconds, micros) = await pipe.execute()
    config = EventConfig.from_fields(event_id, raw)
    return Gate(
        state=config.state,
        cap=config.max_concurrent,
        rate=config.rate,
        in_checkout=int(held),
        first_lease_ms=int(first[0][1]) if first else None,
        last_lease_ms=int(last[0][1]) if last else None,
        now_ms=int(seconds) * 1000 + int(micros) // 1000,
        opens_ms=config.opens_ms,
    )


def _seconds(ms: int) -> str:
    return f"{max(0, ms) / 1000:.0f} s"


def pause_reason(
    gate: Gate, *, queue_length: int, arriving: bool, admitted: int, seconds: float
) -> str | None:
    """Why admissions stopped or slowed well below the rate limit, in a few words; None while
    they flow (or nobody waits and nothing is left to end).

    Args:
        gate: Redis read at the end of the interval.
        queue_length: users waiting in the event's queue.
        arriving: some of the run's users have yet to join.
        admitted: users of this run admitted during the last ``seconds``.
        seconds: the interval since the previous progress line.
    """
    if queue_length <= 0:
        if not arriving and gate.in_checkout and gate.last_lease_ms is not None:
            # Everyone is through the queue; the run ends when the last checkout does.
            left = _seconds(gate.last_lease_ms - gate.now_ms)
            return f"waiting for {gate.in_checkout} checkouts to end; the last lease ends in {left}"
        return None
    if gate.opens_ms > gate.now_ms:
        until = _seconds(gate.opens_ms - gate.now_ms)
        return f"pre-queue: nobody is admitted until the draw at the opening in {until}"
    if gate.opens_ms and gate.now_ms - gate.opens_ms < seconds * 1000:
        # Most of the interval was before the opening: no admissions is no stall.
        return "the opening has just passed: the draw places the pre-queue"
    if gate.state is EventState.PAUSED:
        return "the event is paused (waitroom event resume)"
    if admitted >= gate.rate * seconds / 2:
        return None  # admissions flow at a good share of the rate limit: nothing to explain
    if gate.first_lease_ms is not None:
        overdue = gate.now_ms - gate.first_lease_ms
        if overdue > OVERDUE_SECONDS * 1000:
            return f"a lease ran out {_seconds(overdue)} ago and is not reclaimed: no admitter?"
    if gate.in_checkout >= gate.cap:
        when = (
            "now"
            if gate.first_lease_ms is None
            else "in " + _seconds(gate.first_lease_ms - gate.now_ms)
        )
        return f"checkout full ({gate.in_checkout}/{gate.cap} held), next lease ends {when}"
    # Room in checkout and the rate allowing two admissions, yet none: nothing is admitting.
    # (At 0.1/s, nobody admitted in 5 s is just the rate.)
    if admitted == 0 and gate.rate * seconds >= 2:
        return f"room in checkout, yet nobody admitted for {seconds:.0f} s: no admitter?"
    return None


@dataclass(frozen=True)
class Progress:
    """A live view of the run for the terminal."""

    elapsed: float
    users: int
    joined: int
    queued: int
    in_checkout: int
    cap: int
    done: int
    join_rate: float
    admit_rate: float
    paused: str | None = None  # why admissions paused (``pause_reason``)

    def line(self) -> str:
        text = (
            f"{self.elapsed:6.1f}s  joined {self.joined}/{self.users}  queued {self.queued}  "
            f"in checkout {self.in_checkout}/{self.cap}  done {self.done}  "
            f"join {self.join_rate:.0f}/s  admit {self.admit_rate:.0f}/s"
        )
        return f"{text}  | {self.paused}" if self.paused else text


class LiveProgress:
    """Live progress on stderr: one updating line on a terminal, else a line every 5 s."""

    def __init__(self, live: bool) -> None:
        self.live = live
        self.shown = False

    @property
    def every(self) -> float:
        return 0.5 if self.live else 5.0

    def __call__(self, progress: Progress) -> None:
        if self.live:
            click.echo("\r\x1b[K" + progress.line(), nl=False, err=True)
            self.shown = True
        else:
            click.echo(progress.line(), err=True)

    def end(self) -> None:
        if self.shown:
            click.echo("", err=True)
