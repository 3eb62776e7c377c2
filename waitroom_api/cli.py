"""``waitroom api``: run the gRPC front door."""

from __future__ import annotations

import logging
import sys

import click

from shared import metrics
from shared import settings as settings_mod
from shared.cli import RET_ERROR, RET_OK, RET_SETTINGS, fail, run_process
from shared.connections import configure_logging
from shared.redis_check import check_at_start
from shared.redis_config import redis_options
from waitroom_api.server import ApiServer, serve

log = logging.getLogger("waitroom_api")


def _announce(server: ApiServer) -> None:
    host = server.api.addr.rpartition(":")[0]
    log.info(
        "waitroom API listening on %s:%d (reflection and grpc.health.v1 on), %s",
        host,
        server.port,
        redis_options(server.common).where,
    )


@click.command()
def api() -> None:
    """Run the gRPC API (waitroom.v1.WaitroomService) until SIGTERM, then drain.

    Settings come from WAITROOM_ variables (see `waitroom settings`); WAITROOM_API_ADDR says
    where to listen.
    """
    try:
        common = settings_mod.load(settings_mod.CommonSettings)
        common.require_secret()
        api_settings = settings_mod.load(settings_mod.ApiSettings)
    except settings_mod.SettingsError as exc:
        fail(str(exc), RET_SETTINGS)
        return
    configure_logging(common.log_level)
    check_at_start(common)
    try:
        metrics.serve(common.metrics_port, common.metrics_addr)
    except OSError as exc:
        where = f"{common.metrics_addr}:{common.metrics_port}"
        fail(f"cannot serve metrics on {where}: {exc}", RET_SETTINGS)
        return
    try:
        run_process(serve(common, api_settings, on_started=_announce))
    except RuntimeError as exc:
        # grpc reports a port it cannot bind as RuntimeError.
        fail(f"cannot serve on {api_settings.addr}: {exc}", RET_ERROR)
    log.info("waitroom API stopped")
    sys.exit(RET_OK)
