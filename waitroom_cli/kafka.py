"""``waitroom kafka create-topics``: every topic the waitroom uses, created as production needs.

The processes create no topic unless ``WAITROOM_KAFKA_AUTO_CREATE_TOPICS`` is on (development),
so topics come from here, with the old service's partition counts and a real replication
factor. A topic that exists is never changed: the command says how it differs, because adding
partitions moves events to other partitions (and some brokers cannot do it at all).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import click

from shared import settings as settings_mod
from shared.cli import RET_CONNECT, RET_INVALID, RET_OK, RET_SETTINGS, emit, fail, json_option
from shared.kafka import (
    DEFAULT_REPLICATION_FACTOR,
    TOPIC_CONFIGS,
    KafkaUnreachable,
    bootstrap_servers,
    client_options,
    default_topics,
    probe_kafka,
    probe_tls,
)


@dataclass(frozen=True)
class Existing:
    """A topic as the broker describes it."""

    partitions: int
    replication_factor: int


@dataclass(frozen=True)
class TopicReport:
    """What was (or would be) done about one topic, and how an existing one differs."""

    topic: str
    action: str  # "create", "created", "exists"
    partitions: int
    replication_factor: int
    wanted_partitions: int
    wanted_replication_factor: int
    differences: tuple[str, ...] = ()


def plan(
    wanted: Mapping[str, int], replication_factor: int, existing: Mapping[str, Existing]
) -> list[TopicReport]:
    """Per wanted topic: create it, or report how the existing one differs from the wish."""
    reports = []
    for name, partitions in wanted.items():
        have = existing.get(name)
        if have is None:
            reports.append(
                TopicReport(
                    name, "create", partitions, replication_factor, partitions, replication_factor
                )
            )
            continue
        differences = []
        if have.partitions != partitions:
            differences.append(f"partitions {have.partitions}, wanted {partitions}")
        if have.replication_factor != replication_factor:
            differences.append(
                f"replication factor {have.replication_factor}, wanted {replication_factor}"
            )
        reports.append(
            TopicReport(
                name,
                "exists",
                have.partitions,
                have.replication_factor,
                partitions,
                replication_factor,
                tuple(differences),
            )
        )
    return reports


def describe(admin: Any, names: list[str]) -> dict[str, Existing]:
    """The wanted topics that exist, with their partition count and replication factor."""
    present = set(admin.list_topics()) & set(names)
    if not present:
        return {}
    found = {}
    for topic in admin.describe_topics(sorted(present)):
        partitions = topic.get("partitions") or []
        if topic.get("error_code") or not partitions:
            continue
        replicas = max(len(p.get("replica_nodes") or p.get("replicas") or []) for p in partitions)
        found[str(topic.get("name") or topic.get("topic"))] = Existing(len(partitions), replicas)
    return found


def apply(
    common: settings_mod.CommonSettings,
    wanted: Mapping[str, int],
    replication_factor: int,
    dry_run: bool,
) -> list[TopicReport]:
    """Describe, then create the missing topics (unless ``dry_run``)."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(**client_options(common), client_id="waitroom-create-topics")
    try:
        reports = plan(wanted, replication_factor, describe(admin, list(wanted)))
        missing = [r for r in reports if r.action == "create"]
        if dry_run or not missing:
            return reports
        new = [
            NewTopic(
                r.topic,
                r.partitions,
                r.replication_factor,
                topic_configs=TOPIC_CONFIGS.get(r.topic, {}),
            )
            for r in missing
        ]
        try:
            admin.create_topics(new)
        except TopicAlreadyExistsError:
            # Someone created one of them since we looked: describe again and report that.
            return apply(common, wanted, replication_factor, dry_run)
        return [
            TopicReport(**{**asdict(r), "action": "created"}) if r.action == "create" else r
            for r in reports
        ]
    finally:
        admin.close()


def _line(report: TopicReport) -> str:
    shape = f"{report.partitions} partitions x {report.replication_factor} replicas"
    if report.action == "exists" and report.differences:
        return f"{report.topic:<22} exists, DIFFERS: {'; '.join(report.differences)}"
    verb = {"create": "would create", "created": "created", "exists": "exists"}[report.action]
    return f"{report.topic:<22} {verb}: {shape}"


@click.group()
def kafka() -> None:
    """Kafka topics."""


@kafka.command(name="create-topics")
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    default=None,
    help="One partition count for every topic (default: the old service's, 10 for queue.ready "
    "and checkout.*, 5 for queue.joined, queue.left and the dead-letter topic).",
)
@click.option(
    "--replication-factor",
    type=click.IntRange(min=1),
    default=DEFAULT_REPLICATION_FACTOR,
    show_default=True,
    help="Replicas of every partition.",
)
@click.option("--dry-run", is_flag=True, help="Only say what would be created and what differs.")
@json_option
def create_topics(
    partitions: int | None, replication_factor: int, dry_run: bool, as_json: bool
) -> None:
    """Create every topic the waitroom produces or consumes that does not exist yet.

    Existing topics are left alone; those whose partition count or replication factor differ
    from the wish are listed, and the command exits 4.
    """
    try:
        common = settings_mod.load(settings_mod.CommonSettings)
        common.require_kafka_security()
        consumer = settings_mod.load(settings_mod.ConsumerSettings)
    except settings_mod.SettingsError as exc:
        fail(str(exc), RET_SETTINGS)
    if not common.kafka_enabled:
        fail("WAITROOM_KAFKA_BOOTSTRAP_SERVERS is empty: there is no Kafka to create topics in")
    wanted = default_topics(consumer, partitions)
    try:
        probe_kafka(bootstrap_servers(common))
        probe_tls(common)
        reports = apply(common, wanted, replication_factor, dry_run)
    except KafkaUnreachable as exc:
        fail(f"cannot reach Kafka: {exc}", RET_CONNECT)
    except Exception as exc:  # whatever kafka-python raises: name it, never a traceback
        fail(f"Kafka refused: {exc!r}", RET_CONNECT)
    differing = [r for r in reports if r.differences]
    data = {"topics": [asdict(r) for r in reports], "differing": len(differing)}
    human = "\n".join(_line(r) for r in reports)
    if differing:
        human += (
            f"\n{len(differing)} topic(s) differ; they were left as they are (adding partitions "
            "moves events to other partitions: do it between sales, with the broker's tools)"
        )
    emit(as_json, data, human)
    sys.exit(RET_INVALID if differing else RET_OK)
