"""What a rehearsal is asked for (``SimulationConfig``) and what it gathered (``RunData``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.events import EventConfig
from shared.sessions import SessionRecord
from shared.settings import KafkaClientSettings
from waitroom_dev.simulate.checkout import CheckoutPlan, CheckoutStandIn
from waitroom_dev.simulate.invariants import Sample
from waitroom_dev.simulate.users import Crowd, UserTrace


@dataclass(frozen=True)
class SimulationConfig:
    """One rehearsal's settings, as ``waitroom simulate`` was given them."""

    target: str
    redis_url: str
    bootstrap: str
    event_id: str
    users: int
    arrival: str  # "burst" or "ramp"
    rate: float  # joins per second when ramping
    mode: str  # "poll", "stream" or "mixed"
    plan: CheckoutPlan
    poll_interval: float = 2.0
    channels: int = 8
    timeout: float = 300.0
    seed: int | None = None
    kafka: KafkaClientSettings = field(default_factory=KafkaClientSettings)
    opens_in: float | None = None  # set the event's opening this many seconds ahead
    before: float = 0.0  # share of users who arrive before the opening
    abandon: float = 0.0  # share of users who stop following right after joining


@dataclass(frozen=True)
class DrawOutcome:
    """A scheduled opening's draw as the waitroom holds it after the run.

    ``ranks[t - 1]`` is the place the draw gave ticket ``t`` (tickets 1..entrants were the
    pre-queue). ``verify`` is what ``waitroom event draw export`` and ``verify`` said of it.
    """

    opens_ms: int
    entrants: int | None  # None: the pre-queue never closed (no draw)
    drawn_ms: int
    ranks: list[int]
    verify: dict[str, Any]


@dataclass
class RunData:
    """Everything a run gathered, handed to the report."""

    config: SimulationConfig
    run_id: str
    event: EventConfig
    started: float  # wall-clock seconds
    ended: float
    traces: list[UserTrace]
    records: dict[str, SessionRecord]
    samples: list[Sample]
    max_in_checkout: int
    sample_count: int
    redis_errors: int
    crowd: Crowd
    stand_in: CheckoutStandIn
    draw: DrawOutcome | None = None  # None: the event had no scheduled opening
