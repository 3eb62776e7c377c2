"""``waitroom consumer`` (the worker and its health check) and ``waitroom checkout``."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from shared import heartbeats, keys, metrics
from shared import settings as settings_mod
from shared.cli import (
    KAFKA_VAR,
    RET_CONNECT,
    RET_SETTINGS,
    announce,
    check_heartbeats,
    emit,
    fail,
    json_option,
    run_process,
    with_redis,
)
from shared.errors import WaitroomError
from shared.ids import event_of_session
from shared.kafka import bootstrap_servers, kafka_producer, probe_kafka
from shared.logs import configure_logging
from shared.messages import CHECKOUT_COMPLETED, CHECKOUT_EXPIRED, CHECKOUT_FAILED, checkout_message
from shared.redis_check import check_at_start
from shared.scripts import Scripts
from shared.settings import CommonSettings, ConsumerSettings, KafkaClientSettings
from shared.timefmt import now_ms


def _settings() -> tuple[CommonSettings, KafkaClientSettings, ConsumerSettings]:
    try:
        common = settings_mod.load(CommonSettings)
        common.require_kafka_security()
        tuning = settings_mod.load(KafkaClientSettings)
        consumer_settings = settings_mod.load(ConsumerSettings)
    except settings_mod.SettingsError as exc:
        fail(str(exc), RET_SETTINGS)
    if not common.kafka_enabled:
        fail(
            "WAITROOM_KAFKA_BOOTSTRAP_SERVERS is empty; checkout outcomes need Kafka", RET_SETTINGS
        )
    return common, tuning, consumer_settings


@click.group(invoke_without_command=True)
@click.pass_context
def consumer(ctx: click.Context) -> None:
    """Consume checkout outcomes from Kafka and free checkout slots (runs the worker)."""
    if ctx.invoked_subcommand is not None:
        return
    from waitroom_consumer.worker import Consumer

    common, tuning, consumer_settings = _settings()
    configure_logging(common.log_level)
    check_at_start(common)
    metrics.serve(common.metrics_port, common.metrics_addr)
    sys.exit(run_process(Consumer(common, tuning, consumer_settings).run()))


@consumer.command()
@click.option("--replica", default=None, help="Check this replica only (default: any).")
@click.option(
    "--max-age",
    type=float,
    default=None,
    help="Heartbeat age in seconds that still counts as alive "
    "(default: three heartbeat intervals of that replica, at least 5 s).",
)
@json_option
def check(replica: str | None, max_age: float | None, as_json: bool) -> None:
    """Exit 0 when a consumer (or REPLICA) has a fresh heartbeat, else 4 (a liveness probe)."""

    def describe(beat: heartbeats.Beat) -> str:
        handled = beat.data.get("handled")
        counts = handled if isinstance(handled, dict) else {}
        detail = ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
        total = sum(n for n in counts.values() if isinstance(n, int))
        return f"handled {total}" + (f" ({detail})" if detail else "")

    check_heartbeats(keys.CONSUMER_HEARTBEATS, "consumer", replica, max_age, as_json, describe)


@click.group()
def checkout() -> None:
    """Publish checkout outcomes as the order service does (for operators and testing)."""


def _user_of(event_id: str, session_id: str) -> str:
    async def read(scripts: Scripts) -> str | None:
        view = (await scripts.status(event_id, [session_id])).sessions[0]
        return view.record.user_id if view.record else None

    user_id = with_redis(read)
    if user_id is None:
        fail(f"WTR001 - session not found in event {event_id!r}; pass --user-id to send anyway")
    return user_id


def _publish(
    kind: str, session_id: str, user_id: str | None, event_id: str | None, as_json: bool
) -> None:
    common, tuning, consumer_settings = _settings()
    announce(KAFKA_VAR)
    topic = {
        CHECKOUT_COMPLETED: consumer_settings.topic_completed,
        CHECKOUT_FAILED: consumer_settings.topic_failed,
        CHECKOUT_EXPIRED: consumer_settings.topic_expired,
    }[kind]
    if event_id is None:
        try:
            event_id = event_of_session(session_id)
        except WaitroomError as exc:
            fail(f"{exc.message}; pass --event-id to send anyway")
    if user_id is None:
        user_id = _user_of(event_id, session_id)
    body = checkout_message(kind, session_id, user_id, event_id, now_ms())
    try:
        probe_kafka(bootstrap_servers(common))
        producer = kafka_producer(common, tuning, client_id="waitroom-cli")
    except Exception as exc:  # KafkaUnreachable, or kafka-python's own errors
        fail(f"cannot reach Kafka at {common.kafka_bootstrap_servers}: {exc}", RET_CONNECT)
    try:
        value = json.dumps(body, separators=(",", ":")).encode("utf-8")
        sent: Any = producer.send(topic, key=event_id.encode("utf-8"), value=value)
        meta = sent.get(timeout=tuning.request_timeout_ms / 1000)
    except Exception as exc:
        fail(f"Kafka did not acknowledge the message: {exc}", RET_CONNECT)
    finally:
        producer.close(timeout=5)
    data = {
        "topic": topic,
        "partition": meta.partition,
        "offset": meta.offset,
        "key": event_id,
        "message": body,
    }
    human = (
        f"sent {topic} for session {session_id} (event {event_id}, user {user_id}) "
        f"to partition {meta.partition} at offset {meta.offset}"
    )
    emit(as_json, data, human)


def _outcome_command(name: str, kind: str, help_text: str) -> None:
    @checkout.command(name=name, help=help_text)
    @click.argument("session_id")
    @click.option("--user-id", default=None, help="Default: read from the session in Redis.")
    @click.option("--event-id", default=None, help="Default: the event the session id names.")
    @json_option
    def command(session_id: str, user_id: str | None, event_id: str | None, as_json: bool) -> None:
        _publish(kind, session_id, user_id, event_id, as_json)


_outcome_command("complete", CHECKOUT_COMPLETED, "Publish checkout.completed for a session.")
_outcome_command("fail", CHECKOUT_FAILED, "Publish checkout.failed for a session.")
_outcome_command("expire", CHECKOUT_EXPIRED, "Publish checkout.expired for a session.")
