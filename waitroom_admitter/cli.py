"""``waitroom admitter``: run an admitter replica; ``waitroom admitter check``: is one alive."""

from __future__ import annotations

import logging
import sys

import click

from shared import heartbeats, keys, metrics
from shared import settings as settings_mod
from shared.cli import RET_OK, RET_SETTINGS, check_heartbeats, fail, json_option, run_process
from shared.logs import configure_logging
from shared.redis_check import check_at_start
from shared.signing_keys import KeyFileError
from shared.token import signer_for
from waitroom_admitter.worker import Admitter

log = logging.getLogger(__name__)


@click.group(invoke_without_command=True)
@click.pass_context
def admitter(ctx: click.Context) -> None:
    """Run an admitter replica: admits users to checkout and relays the outbox to Kafka.

    Any number of replicas may run; they share the events through per-event locks. SIGTERM
    drains and exits 0 within WAITROOM_ADMITTER_GRACE_SECONDS; a second signal exits at once.
    """
    if ctx.invoked_subcommand is not None:
        return
    try:
        common = settings_mod.load(settings_mod.CommonSettings)
        signer = signer_for(common, settings_mod.load(settings_mod.TokenKeySettings))
        common.require_kafka_security()
        tuning = settings_mod.load(settings_mod.KafkaClientSettings)
        settings = settings_mod.load(settings_mod.AdmitterSettings)
        dead_letter_topic = settings_mod.load(settings_mod.ConsumerSettings).dlq_topic
    except (settings_mod.SettingsError, KeyFileError) as exc:
        fail(str(exc), RET_SETTINGS)
    configure_logging(common.log_level)
    check_at_start(common)
    try:
        metrics.serve(common.metrics_port, common.metrics_addr)
    except OSError as exc:
        port = common.metrics_port
        fail(f"WAITROOM_METRICS_PORT={port}: cannot serve metrics: {exc}", RET_SETTINGS)
    worker = Admitter(
        common,
        tuning,
        settings,
        replica_id=settings.replica_id,
        dead_letter_topic=dead_letter_topic,
        signer=signer,
    )
    run_process(worker.run(handle_signals=True))
    sys.exit(RET_OK)


@admitter.command()
@click.option("--replica", default=None, help="Check this replica only (default: any).")
@click.option(
    "--max-age",
    type=float,
    default=None,
    help="Heartbeat age in seconds that still counts as alive "
    "(default: three sweeps of that replica, at least 5 s).",
)
@json_option
def check(replica: str | None, max_age: float | None, as_json: bool) -> None:
    """Exit 0 when an admitter (or REPLICA) has a fresh heartbeat, else 4 (a liveness probe)."""

    def describe(beat: heartbeats.Beat) -> str:
        data = beat.data
        return f"events {data.get('events', 0)}  admitted {data.get('admitted', 0)}"

    check_heartbeats(keys.ADMITTER_HEARTBEATS, "admitter", replica, max_age, as_json, describe)
