"""Wake-ups: the scripts publish an event id on the notify channel whenever an event changed in
a way others wait for (a slot freed, a user joined with room free, users admitted). One listener
turns each message into a callback, in every process that needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from redis.asyncio import Redis

from shared import keys
from shared.backoff import Outage, bug, is_transient, pause

#: How long one read of the subscription waits; also how soon a stop is noticed.
READ_SECONDS = 0.5
#: Pause before resubscribing after a failure of our own (a transient one backs off instead).
AFTER_BUG_SECONDS = 1.0


class NotifyListener:
    """Subscribes to the notify channel and calls ``on_event(event_id)`` for every message.

    After every (re)subscription it calls ``on_resubscribe()``: messages published while the
    subscription was down are lost, so whoever listens must look at everything again. A Redis
    outage is waited out with backoff; an error of our own (a callback raising) is logged with
    its traceback and the subscription is made again, so it never dies.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        on_event: Callable[[str], None],
        on_resubscribe: Callable[[], None],
        outage: Outage,
        logger: logging.Logger,
    ) -> None:
        self.redis = redis
        self.on_event = on_event
        self.on_resubscribe = on_resubscribe
        self.outage = outage
        self.logger = logger
        self.received = 0
        self.subscriptions = 0

    async def run(self, stopping: asyncio.Event) -> None:
        """Listen until ``stopping`` is set."""
        while not stopping.is_set():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            delay = 0.0
            try:
                await pubsub.subscribe(keys.NOTIFY_CHANNEL)
                self.subscriptions += 1
                self.outage.recovered()
                self.on_resubscribe()
                while not stopping.is_set():
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=READ_SECONDS
                    )
                    if message is not None and message["type"] == "message":
                        self.received += 1
                        data = message["data"]
                        if isinstance(data, bytes):
                            data = data.decode("utf-8", "replace")
                        self.on_event(str(data))
            except Exception as exc:
                if is_transient(exc):
                    delay = self.outage.failed(exc)
                else:
                    bug(self.logger, "the notification listener", exc)
                    delay = AFTER_BUG_SECONDS
            finally:
                with contextlib.suppress(Exception):  # the connection may be gone already
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await pause(stopping, delay)

    def __repr__(self) -> str:
        return f"NotifyListener(received={self.received}, subscriptions={self.subscriptions})"
