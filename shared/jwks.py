"""Serving the public token keys as ``/.well-known/jwks.json``, for the order service.

A small HTTP server on its own port (``WAITROOM_JWKS_PORT``), in a daemon thread like the
``/metrics`` server, so it never holds up the event loop or the process's exit. The document
is built from the keyring at each request, so a key added to the directory is published at the
keyring's next re-read, well before it takes over signing (``shared.signing_keys``).
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from shared.signing_keys import Keyring

log = logging.getLogger(__name__)

PATH = "/.well-known/jwks.json"

#: Verifiers may cache the document this long (s). New keys are published minutes before they
#: sign (``waitroom token new-key --takeover-in``), so a cached copy always knows them in time.
MAX_AGE_SECONDS = 60


class JwksServer:
    """``GET /.well-known/jwks.json`` on ``addr:port`` (0: a free port); everything else 404."""

    def __init__(self, keyring: Keyring, addr: str, port: int) -> None:
        self.keyring = keyring
        handler = type("Handler", (_Handler,), {"keyring": keyring})
        self._server = ThreadingHTTPServer((addr.strip() or "0.0.0.0", port), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="jwks", daemon=True)

    def start(self) -> JwksServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __repr__(self) -> str:
        return f"JwksServer(port={self.port}, {self.keyring!r})"


class _Handler(BaseHTTPRequestHandler):
    keyring: Keyring

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != PATH:
            self._send(404, {"error": f"not found; the keys are at {PATH}"})
            return
        self._send(200, self.keyring.jwks(), cache=True)

    def _send(self, status: int, body: dict[str, Any], cache: bool = False) -> None:
        data = json.dumps(body, sort_keys=True).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if cache:
            self.send_header("Cache-Control", f"public, max-age={MAX_AGE_SECONDS}")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("jwks: " + format, *args)
