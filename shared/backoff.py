"""Retrying through outages: one backoff-with-jitter helper, and logging once per outage."""

from __future__ import annotations

import logging
import random


def compute_backoff(attempt: int, *, base: float = 0.1, cap: float = 5.0) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): exponential, capped, full jitter."""
    return random.uniform(0, min(cap, base * (2 ** min(attempt, 16))))


class Outage:
    """Tracks one dependency's outage so it is logged when it starts and when it ends, not
    once per failed attempt."""

    def __init__(self, name: str, logger: logging.Logger) -> None:
        self.name = name
        self.logger = logger
        self.attempts = 0
        self.outages = 0

    @property
    def down(self) -> bool:
        return self.attempts > 0

    def failed(self, exc: BaseException) -> float:
        """Record a failure; returns how long to wait before trying again."""
        if self.attempts == 0:
            self.outages += 1
            self.logger.warning("%s unavailable, retrying with backoff: %s", self.name, exc)
        delay = compute_backoff(self.attempts)
        self.attempts += 1
        return delay

    def recovered(self) -> None:
        if self.attempts:
            self.logger.warning("%s available again after %d attempts", self.name, self.attempts)
        self.attempts = 0

    def __repr__(self) -> str:
        return (
            f"Outage({self.name!r}, down={self.down}, "
            f"attempts={self.attempts}, outages={self.outages})"
        )
