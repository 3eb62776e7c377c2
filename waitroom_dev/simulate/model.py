"""What a rehearsal is asked for (``SimulationConfig``) and what it gathered (``RunData``)."""

from __future__ import annotations

from dataclasses import dataclass, field

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
