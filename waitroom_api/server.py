"""Building, running and draining the gRPC server.

TLS: given a certificate and key (``WAITROOM_API_TLS_CERTFILE``/``KEYFILE``) the API serves
only TLS, and given a client CA (``WAITROOM_API_TLS_CLIENT_CAFILE``) it requires every caller to
present a certificate that chains to it. Kubernetes' gRPC probes speak plaintext only, so
``WAITROOM_API_HEALTH_ADDR`` adds a second, plaintext server that serves nothing but the same
``grpc.health.v1`` servicer (it goes NOT_SERVING with the main one when draining).

Shutdown: the first SIGTERM (or SIGINT) marks the process NOT_SERVING, stops accepting calls,
and gives calls in flight ``grace_seconds`` to finish (open position streams, which never
finish on their own, are cancelled when the grace period ends); then Redis is closed and the
process exits 0. A second signal exits at once with ``RET_FORCED`` (``shared.signals``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from shared import secrets, signals
from shared import settings as settings_mod
from shared.connections import redis_client
from shared.jwks import JwksServer
from shared.proto import waitroom_pb2_grpc
from shared.scripts import Scripts
from shared.settings import (
    ApiSettings,
    CommonSettings,
    EventServiceSettings,
    SettingsError,
    TokenKeySettings,
)
from shared.signing_keys import Keyring
from shared.token import Signer, signer_for
from waitroom_api.eventservice import EventDirectory, EventServiceClient
from waitroom_api.health import SERVICE_NAME, HealthProbe, standard_health
from waitroom_api.interceptors import MetricsInterceptor
from waitroom_api.render import Renderer
from waitroom_api.servicer import WaitroomServicer
from waitroom_api.watcher import Fanout

log = logging.getLogger(__name__)

HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name

#: Calls that arrived but the event loop has not picked up yet. grpc's default of 1,000
#: cancelled about a tenth of 2,000 streams opened at once (measured), which is what a gateway
#: does when another API replica goes away and its users reconnect here.
MAX_PENDING_CALLS = 20_000

#: Tracked allocations (net of frees) between two young garbage collections; Python's is 700.
#: Each open position stream keeps about 80 objects alive, and each update sent makes a few
#: dozen that live until grpc has written it (about half a second with 10,000 streams). At 700
#: those outlived every young collection, so the collector kept scanning them and moved them
#: to the oldest generation, whose full collections then stopped the process for 0.5-1.3 s
#: (800,000 objects): the fan-out's update p99 went from 0.7 s (collector off) to 1.3-2.9 s,
#: and the collector took a third of the API's CPU (52 vs 35 us per update). At 50,000 the
#: short-lived objects are freed before a collection sees them; a collection is triggered by
#: what accumulates (new streams, cyclic garbage), as before, only less often.
GC_YOUNG_THRESHOLD = 50_000


def server_credentials(api: ApiSettings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings' files, or None for plaintext.

    The files are checked first (readable, PEM, the key belongs to the certificate): grpc
    would only report a bad pair as a failed bind or failed handshakes. Raises SettingsError
    naming the setting at fault.
    """
    if not api.tls:
        return None
    try:
        secrets.check_key_pair(
            "WAITROOM_API_TLS_CERTFILE",
            api.tls_certfile,
            "WAITROOM_API_TLS_KEYFILE",
            api.tls_keyfile,
            server=True,
        )
        chain = secrets.read_bytes("WAITROOM_API_TLS_CERTFILE", api.tls_certfile)
        key = secrets.read_bytes("WAITROOM_API_TLS_KEYFILE", api.tls_keyfile)
        client_ca = None
        if api.tls_client_cafile:
            secrets.check_ca("WAITROOM_API_TLS_CLIENT_CAFILE", api.tls_client_cafile)
            client_ca = secrets.read_bytes("WAITROOM_API_TLS_CLIENT_CAFILE", api.tls_client_cafile)
    except secrets.SecretError as exc:
        raise SettingsError(str(exc)) from None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


class ApiServer:
    """One API process: the gRPC server, its Redis client and the stream fan-out."""

    def __init__(
        self,
        common: CommonSettings,
        api: ApiSettings,
        *,
        signer: Signer | None = None,
        keys: TokenKeySettings | None = None,
        events: EventServiceSettings | None = None,
    ) -> None:
        self.common = common
        self.api = api
        self.credentials = server_credentials(api)  # first: a bad file stops before anything
        self.redis = redis_client(common, max_connections=api.redis_connections)
        self.scripts = Scripts(self.redis)
        self.fanout = Fanout(self.redis, self.scripts, api)
        self.probe = HealthProbe(self.redis, common)
        keys = keys or settings_mod.load(TokenKeySettings)
        signer = signer or signer_for(common, keys)
        renderer = Renderer(signer, api.checkout_url, api.websocket_url)
        self.servicer = WaitroomServicer(self.scripts, self.fanout, renderer, self.probe, common)
        self.jwks: JwksServer | None = None
        if isinstance(signer, Keyring) and keys.jwks_port:
            self.jwks = JwksServer(signer, keys.jwks_addr, keys.jwks_port)
        events = events or settings_mod.load(EventServiceSettings)
        if events.enabled:
            client = EventServiceClient(events.addr.strip(), events.timeout_seconds)
            self.servicer.events = EventDirectory(self.redis, self.scripts, client, events)
        self._refresh_stop = asyncio.Event()
        self._refresh: asyncio.Task[None] | None = None
        options = [
            ("grpc.so_reuseport", 1 if api.reuse_port else 0),
            ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
            ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_CALLS),
        ]
        self.server = aio.server(interceptors=[MetricsInterceptor()], options=options)
        self.health_server = aio.server(options=options[:1]) if api.health_addr else None
        self.port = 0
        self.health_port = 0
        self._health: Any = None
        self._stopping: asyncio.Task[None] | None = None
        self._signal_tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Bind, start serving, and return the bound port."""
        waitroom_pb2_grpc.add_WaitroomServiceServicer_to_server(self.servicer, self.server)
        self._health = await standard_health()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        # grpc raises RuntimeError when it cannot bind.
        if self.credentials is None:
            self.port = self.server.add_insecure_port(self.api.addr)
        else:
            self.port = self.server.add_secure_port(self.api.addr, self.credentials)
        if self.health_server is not None:
            health_pb2_grpc.add_HealthServicer_to_server(self._health, self.health_server)
            self.health_port = self.health_server.add_insecure_port(self.api.health_addr)
            await self.health_server.start()
        await self.server.start()
        self.fanout.start()
        if self.jwks is not None:
            self.jwks.start()
        if self.servicer.events is not None:
            self._refresh = asyncio.create_task(self.servicer.events.run(self._refresh_stop))
        return self.port

    async def stop(self, grace: float | None) -> None:
        """Drain (``grace`` seconds, None: at once), then release Redis. Safe to call twice:
        a later call with a shorter grace cuts the drain short."""
        self.probe.draining = True
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self._stopping is None:
            self._stopping = asyncio.create_task(self._stop(grace))
        else:
            await self.server.stop(grace)
        await asyncio.shield(self._stopping)

    async def _stop(self, grace: float | None) -> None:
        await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(None)
        self._refresh_stop.set()
        if self._refresh is not None:
            await self._refresh
        if self.servicer.events is not None:
            await self.servicer.events.close()
        if self.jwks is not None:
            self.jwks.close()
        await self.fanout.close()
        await self.redis.aclose()

    def on_signal(self, name: str) -> None:
        """Drain for the grace period (a second signal is ``shared.signals``' to handle)."""
        log.info("%s: draining for up to %gs", name, self.api.grace_seconds)
        # Held so the task cannot be garbage-collected before it ran.
        task = asyncio.get_running_loop().create_task(self.stop(self.api.grace_seconds))
        self._signal_tasks.add(task)
        task.add_done_callback(self._signal_tasks.discard)

    async def wait_stopped(self) -> None:
        await self.server.wait_for_termination()
        if self._stopping is not None:
            await asyncio.shield(self._stopping)

    def __repr__(self) -> str:
        return (
            f"ApiServer(port={self.port}, tls={self.api.tls}, draining={self.probe.draining}, "
            f"{self.servicer!r})"
        )


def tune_gc() -> None:
    """Set this process's garbage collector for many long-lived streams (see
    ``GC_YOUNG_THRESHOLD``), and freeze what exists once serving: modules, grpc and protobuf
    descriptors, settings live as long as the process, so no full collection scans them again.
    Only for a process of its own (``serve``): freezing is process-wide."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


async def serve(
    build: Callable[[], ApiServer], *, on_started: Callable[[ApiServer], None] | None = None
) -> None:
    """Build the server inside the running loop (grpc.aio binds to it), run it until
    SIGTERM/SIGINT, then drain and return."""
    server = build()
    remove_signals = signals.install(server.on_signal, log)
    try:
        await server.start()
        tune_gc()
        if on_started is not None:
            on_started(server)
        await server.wait_stopped()
    finally:
        remove_signals()
        if server._stopping is None:
            await server.stop(None)
