"""How every process logs, and keeping kafka-python's own error logs to a trickle.

kafka-python logs every failed connect, fetch and metadata refresh at ERROR, about twenty lines a
second while the broker is down; the processes report outages themselves (once per outage,
``shared.backoff.Outage``), so kafka-python's lines are let through at most once per interval,
with a count of those dropped: enough to see what the client itself said, never a flood.
"""

from __future__ import annotations

import logging
import time

INTERVAL_SECONDS = 60.0


class KafkaLogThrottle(logging.Filter):
    """Passes one ``kafka.*`` record per interval; everything else untouched."""

    def __init__(self, interval: float = INTERVAL_SECONDS) -> None:
        super().__init__()
        self.interval = interval
        self.last = float("-inf")
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("kafka"):
            return True
        now = time.monotonic()
        if now - self.last < self.interval:
            self.dropped += 1
            return False
        if self.dropped:
            note = f"{self.dropped} kafka-python messages dropped before this one"
            record.msg, record.args = f"{record.getMessage()} ({note})", None
        self.last, self.dropped = now, 0
        return True


def throttle_kafka_logs(interval: float = INTERVAL_SECONDS) -> None:
    """Install the throttle on the root logger's handlers (kafka's loggers propagate there)."""
    throttle = KafkaLogThrottle(interval)
    for handler in logging.getLogger().handlers:
        handler.addFilter(throttle)


def configure_logging(level: str) -> None:
    """One line per record on stderr, at ``level`` (WAITROOM_LOG_LEVEL), kafka-python's errors
    throttled."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("kafka").setLevel(logging.ERROR)
    throttle_kafka_logs()
