"""Stopping on signals, the same in every process.

The first SIGTERM or SIGINT asks the process to drain (each process says what that means: the
API finishes calls in flight, the admitter its batch and relay, the consumer its batch and
commit). A second one, or a drain that overruns its grace period, ends the process at once with
``RET_FORCED``, so a supervisor or Kubernetes can tell a forced stop from a clean one (exit 0).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from typing import NoReturn

from shared.cli import RET_FORCED

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def force_exit(logger: logging.Logger, reason: str) -> NoReturn:
    """End the process now, without draining, with ``RET_FORCED``."""
    logger.warning("%s: exiting at once (exit %d)", reason, RET_FORCED)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(RET_FORCED)


def install(on_stop: Callable[[str], None], logger: logging.Logger) -> Callable[[], None]:
    """Call ``on_stop(signal name)`` on the first stop signal; force the exit on the second.

    Must run inside the event loop; returns a function that removes the handlers again.
    """
    loop = asyncio.get_running_loop()
    received: list[str] = []

    def handle(signum: int) -> None:
        name = signal.Signals(signum).name
        if received:
            force_exit(logger, f"{name} again")
        received.append(name)
        on_stop(name)

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, handle, signum)

    def remove() -> None:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)

    return remove
