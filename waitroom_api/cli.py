"""``waitroom api``: run the gRPC front door."""

from __future__ import annotations

import logging
import sys

import click

from shared import metrics
from shared import settings as settings_mod
from shared.cli import RET_ERROR, RET_OK, RET_SETTINGS, fail, run_process
from shared.logs import configure_logging
from shared.redis_check import check_at_start
from shared.redis_config import redis_options
from shared.settings import SettingsError
from shared.signing_keys import KeyFileError
from shared.token import signer_for
from waitroom_api.server import ApiServer, serve

log = logging.getLogger("waitroom_api")


def _announce(server: ApiServer) -> None:
    host = server.api.addr.rpartition(":")[0]
    if not server.api.tls:
        security = "plaintext"
    elif server.api.tls_client_cafile:
        security = "TLS, client certificates required"
    else:
        security = "TLS"
    log.info(
        "waitroom API listening on %s:%d (%s; reflection and grpc.health.v1 on), %s",
        host,
        server.port,
        security,
        redis_options(server.common).where,
    )
    if server.health_server is not None:
        health_host = server.api.health_addr.rpartition(":")[0]
        log.info("grpc.health.v1 alone, plaintext, on %s:%d", health_host, server.health_port)


@click.command()
def api() -> None:
    """Run the gRPC API (waitroom.v1.WaitroomService) until SIGTERM, then drain.

    Settings come from WAITROOM_ variables (see `waitroom settings`); WAITROOM_API_ADDR says
    where to listen.
    """
    try:
        common = settings_mod.load(settings_mod.CommonSettings)
        keys = settings_mod.load(settings_mod.TokenKeySettings)
        signer = signer_for(common, keys)
        events = settings_mod.load(settings_mod.EventServiceSettings)
        api_settings = settings_mod.load(settings_mod.ApiSettings)
    except (settings_mod.SettingsError, KeyFileError) as exc:
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

        def build() -> ApiServer:
            return ApiServer(common, api_settings, signer=signer, keys=keys, events=events)

        run_process(serve(build, on_started=_announce))
    except SettingsError as exc:  # a certificate or key file (server_credentials)
        fail(str(exc), RET_SETTINGS)
    except RuntimeError as exc:
        # grpc reports a port it cannot bind as RuntimeError.
        where = " or ".join(a for a in (api_settings.addr, api_settings.health_addr) if a)
        fail(f"cannot serve on {where}: {exc}", RET_ERROR)
    log.info("waitroom API stopped")
    sys.exit(RET_OK)
