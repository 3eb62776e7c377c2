"""``waitroom consumer`` (the worker and its health check) and ``waitroom checkout``."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from shared import heartbeats, keys, metrics
from shared import settings as settings_mod
from shared.cli import (
    RET_CONNECT,
    RET_INVALID,
    RET_OK,
    RET_SETTINGS,
    emit,
    fail,
    json_option,
    run_process,
    with_redis,
)
from shared.connections import bootstrap_servers, configure_logging, kafka_producer, probe_kafka
from shared.errors import WaitroomError
from shared.ids import event_of_session
from shared.messages import CHECKOUT_COMPLETED, CHECKOUT_EXPIRED, CHECKOUT_FAILED, checkout_message
from shared.scripts import Scripts
from shared.settings import CommonSettings, ConsumerSettings, KafkaClientSettings
from shared.timefmt import now_ms
from waitroom_consumer.logs import throttle_kafka_logs


def _settings() -> tuple[CommonSettings, KafkaClientSettings, ConsumerSettings]:
    try:
        common = settings_mod.load(CommonSettings)
        tuning = settings_mod.load(KafkaClientSettings)
        consumer_settings = settings_mod.load(ConsumerSettings)
    except settings_mod.SettingsError as exc:
        fail(str(exc), RET_SETTINGS)
        raise  # unreachable; keeps the type checker informed
    if not common.kafka_enabled:
        fail(
            "WAITROOM_KAFKA_BOOTSTRAP_SERVERS is empty; checkout outcomes need Kafka", RET_SETTINGS
        )
    return common, tuning, consumer_settings


#: A consumer heartbeat older than this means the replica is stuck or gone.
HEARTBEAT_MAX_AGE_SECONDS = 30.0


@click.group(invoke_without_command=True)
@click.pass_context
def consumer(ctx: click.Context) -> None:
    """Consume checkout outcomes from Kafka and free checkout slots (runs the worker)."""
    if ctx.invoked_subcommand is not None:
        return
    from waitroom_consumer.worker import Consumer

    common, tuning, consumer_settings = _settings()
    configure_logging(common.log_level)
    throttle_kafka_logs()
    metrics.serve(common.metrics_port)
    sys.exit(run_process(Consumer(common, tuning, consumer_settings).run()))


@consumer.command()
@click.option("--replica", default=None, help="Check this replica only (default: any).")
@click.option(
    "--max-age",
    type=float,
    default=HEARTBEAT_MAX_AGE_SECONDS,
    show_default=True,
    help="Seconds after which a heartbeat is stale.",
)
@json_option
def check(replica: str | None, max_age: float, as_json: bool) -> None:
    """Exit 0 when a consumer replica has a fresh heartbeat, 4 otherwise."""

    async def read(scripts: Scripts) -> list[heartbeats.Beat]:
        return await heartbeats.read(scripts.redis, keys.CONSUMER_HEARTBEATS)

    beats = [b for b in with_redis(read) if replica is None or b.replica == replica]
    fresh = [b for b in beats if b.fresh(max_age)]
    data = [
        {
            "replica": b.replica,
            "age_seconds": round(b.age_seconds(), 3),
            "fresh": b in fresh,
            **b.data,
        }
        for b in beats
    ]
    lines = [
        f"{b.replica}: {'fresh' if b in fresh else 'STALE'} ({b.age_seconds():.1f}s ago), "
        f"handled {b.data.get('handled', {})}"
        for b in beats
    ]
    wanted = f"replica {replica}" if replica else "any consumer replica"
    human = "\n".join(lines) if lines else f"no heartbeat from {wanted}"
    emit(as_json, {"ok": bool(fresh), "replicas": data}, human)
    sys.exit(RET_OK if fresh else RET_INVALID)


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
    assert user_id is not None
    return user_id


def _publish(
    kind: str, session_id: str, user_id: str | None, event_id: str | None, as_json: bool
) -> None:
    common, tuning, consumer_settings = _settings()
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
    assert event_id is not None
    if user_id is None:
        user_id = _user_of(event_id, session_id)
    body = checkout_message(kind, session_id, user_id, event_id, now_ms())
    try:
        probe_kafka(bootstrap_servers(common))
        producer = kafka_producer(common, tuning, client_id="waitroom-cli")
    except Exception as exc:  # KafkaUnreachable, or kafka-python's own errors
        fail(f"cannot reach Kafka at {common.kafka_bootstrap_servers}: {exc}", RET_CONNECT)
        raise
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
