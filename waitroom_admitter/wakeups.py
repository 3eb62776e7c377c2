"""Wake-ups: the scripts publish an event id on the notify channel whenever a slot was freed
or a user joined while there was room; this turns each message into an immediate admit call."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from redis.asyncio import Redis

from shared import keys
from waitroom_admitter.common import REDIS_ERRORS, RedisHealth, pause

log = logging.getLogger(__name__)


class Wakeups:
    """Listens on the notify channel and calls ``on_event(event_id)`` for every message.

    After (re)subscribing it calls ``on_resubscribe()``: messages published while the
    subscription was down are lost, so everything owned must look again.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        on_event: Callable[[str], None],
        on_resubscribe: Callable[[], None],
        health: RedisHealth,
    ) -> None:
        self.redis = redis
        self.on_event = on_event
        self.on_resubscribe = on_resubscribe
        self.health = health
        self.received = 0
        self.subscriptions = 0

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.NOTIFY_CHANNEL)
                self.subscriptions += 1
                await self.health.succeeded()
                self.on_resubscribe()
                while not stopping.is_set():
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                    if message is not None and message["type"] == "message":
                        self.received += 1
                        data = message["data"]
                        self.on_event(data.decode() if isinstance(data, bytes) else str(data))
            except REDIS_ERRORS as exc:
                await pause(stopping, self.health.failed(exc))
            finally:
                with contextlib.suppress(*REDIS_ERRORS):  # the connection may be gone already
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def __repr__(self) -> str:
        return f"Wakeups(received={self.received}, subscriptions={self.subscriptions})"
