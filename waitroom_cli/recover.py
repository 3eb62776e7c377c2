"""``waitroom recover``: check events against Kafka and rebuild what Redis lost.

docs/reliability.md says when it is needed; the admitter does the same by itself for the events
it owns when Redis went back in time, so this is for a Redis that restarted empty, for an
admitter run with ``WAITROOM_RECOVERY_AUTO=0``, and for operators who want to see.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from shared import settings as settings_mod
from shared.cli import RET_CONNECT, RET_ERROR, RET_SETTINGS, emit, fail, json_option, with_redis
from shared.kafka import KafkaUnreachable
from shared.recovery.restore import EventReport, KafkaState
from shared.recovery.restore import recover as recover_events
from shared.scripts import Scripts


def _settings() -> tuple[Any, ...]:
    try:
        return (
            settings_mod.load(settings_mod.CommonSettings),
            settings_mod.load(settings_mod.KafkaClientSettings),
            settings_mod.load(settings_mod.ConsumerSettings),
            settings_mod.load(settings_mod.AdmitterSettings),
        )
    except settings_mod.SettingsError as exc:
        fail(str(exc), RET_SETTINGS)


def describe(report: EventReport) -> str:
    """One event's outcome in a sentence or two."""
    if report.action == "skipped":
        return f"{report.event_id}: skipped: neither Redis nor Kafka holds anything of it"
    if report.action == "verified":
        return f"{report.event_id}: verified: Redis holds everything Kafka does; nothing to do"
    statuses = ", ".join(f"{n} {name.lower()}" for name, n in sorted(report.sessions.items()))
    total = sum(report.sessions.values())
    lines = [
        f"{report.event_id}: restored in {report.seconds:.2f} s: {report.reason}",
        f"  sessions from Kafka  {total:,} ({statuses or 'none'}); {report.written:,} written, "
        f"{report.advanced:,} moved forward, {report.kept:,} already there, "
        f"{report.conflicts:,} conflicts",
        f"  tickets              counter {report.seq_before:,} -> {report.seq_after:,} "
        f"({report.skipped_tickets:,} skipped), queue head {report.head:,}, "
        f"{report.holes:,} holes",
        f"  lost                 {report.lost_joins:,} joins acknowledged but never on Kafka",
    ]
    if report.config_rebuilt:
        lines.append("  config               rebuilt from the last watermark on Kafka")
    return "\n".join(lines)


@click.command()
@click.argument("event_ids", nargs=-1)
@click.option("--all", "all_events", is_flag=True, help="Every event Redis or Kafka knows.")
@click.option(
    "--force", is_flag=True, help="Restore from Kafka even if Redis does not look behind it."
)
@json_option
def recover(event_ids: tuple[str, ...], all_events: bool, force: bool, as_json: bool) -> None:
    """Check EVENT_IDS (or --all) against Kafka; rebuild what Redis lost.

    Reads every queue and checkout topic once, then, per event: when Redis is behind Kafka
    (it restarted empty, or lost its last writes), pauses the event (joins answer WTR011),
    restores every session Kafka holds with its ticket, admission and token, skips the tickets
    of joins that never reached Kafka, and opens it again; otherwise only marks it checked.
    Running it twice, or beside running processes, is safe. Progress goes to stderr.
    """
    if bool(event_ids) == all_events:
        fail("name the events to recover, or give --all (not both)", RET_ERROR)
    common, tuning, consumer, admitter = _settings()
    if not common.kafka_enabled:
        fail("WAITROOM_KAFKA_BOOTSTRAP_SERVERS is empty: there is no Kafka to recover from")

    def progress(read: int, total: int) -> None:
        total = max(total, read)  # Tansu counts batches, not records, in its end offsets
        click.echo(f"\rreading Kafka: {read:,} of about {total:,} records", nl=False, err=True)

    def done(report: EventReport) -> None:
        if not as_json:
            click.echo(describe(report))

    async def go(scripts: Scripts) -> tuple[KafkaState, list[EventReport]]:
        try:
            return await recover_events(
                scripts,
                common,
                tuning,
                consumer,
                None if all_events else list(event_ids),
                margin=admitter.recovery_ticket_margin,
                force=force,
                progress=progress,
                on_event=done,
            )
        except KafkaUnreachable as exc:
            fail(f"cannot reach Kafka at {common.kafka_bootstrap_servers}: {exc}", RET_CONNECT)

    if not as_json:
        click.echo("checking against Kafka ...", err=True)
    state, reports = with_redis(go)
    click.echo("", err=True)
    summary = (
        f"read {state.records:,} Kafka records in {state.seconds:.2f} s; "
        f"{sum(r.action == 'restored' for r in reports)} of {len(reports)} events restored"
    )
    data = {
        "kafka_records": state.records,
        "kafka_seconds": round(state.seconds, 3),
        "events": [r.to_json() for r in reports],
    }
    emit(as_json, data, summary)
    sys.exit(0)
