"""Certificates made with the openssl command, and a TLS terminator in front of a plaintext
broker, so tests speak TLS end to end.

The broker (Tansu) speaks plaintext only. ``TlsTerminator`` listens on the address the broker
advertises, completes the TLS handshake (requiring a client certificate when given a client
CA) and forwards the bytes to the broker's real listener: every Kafka client sees TLS only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

OPENSSL = "openssl"


@dataclass(frozen=True)
class Pair:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run([OPENSSL, *map(str, args)], check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> Pair:
    """A self-signed CA (EC P-256: a key in milliseconds, where RSA takes a second here)."""
    pair = Pair(directory / f"{name}.crt", directory / f"{name}.key")
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", pair.key)
    _openssl(
        "req", "-x509", "-new", "-key", pair.key, "-out", pair.cert, "-days", "2",
        "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return pair


def make_cert(directory: Path, name: str, ca: Pair, *, password: str = "") -> Pair:
    """A certificate signed by ``ca`` for 127.0.0.1 and localhost, usable by a server and a
    client; with ``password``, its key is encrypted with it."""
    pair = Pair(directory / f"{name}.crt", directory / f"{name}.key")
    plain = directory / f"{name}.plain.key"
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", plain)
    request = directory / f"{name}.csr"
    _openssl("req", "-new", "-key", plain, "-out", request, "-subj", f"/CN={name}")
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "basicConstraints=CA:FALSE\n"
    )
    _openssl(
        "x509", "-req", "-in", request, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial",
        "-out", pair.cert, "-days", "2", "-extfile", extensions,
    )  # fmt: skip
    if password:
        _openssl(
            "pkcs8", "-topk8", "-in", plain, "-out", pair.key, "-v2", "aes-256-cbc",
            "-passout", f"pass:{password}",
        )  # fmt: skip
    else:
        plain.rename(pair.key)
    return pair


@dataclass
class TlsTerminator:
    """Accepts TLS on ``port`` and forwards the plaintext to ``target_port`` (both local)."""

    port: int
    target_port: int
    server: Pair
    client_ca: Path | None = None
    handshakes: int = 0
    refused: int = 0
    peers: set[str] = field(default_factory=set)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def start(self) -> TlsTerminator:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.server.cert, self.server.key)
        if self.client_ca is not None:
            context.load_verify_locations(self.client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                server = loop.run_until_complete(
                    asyncio.start_server(
                        self._serve, "127.0.0.1", self.port, ssl=context, reuse_address=True
                    )
                )
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                server.close()
                loop.close()

        self._thread = threading.Thread(target=run, name="tls-terminator", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1
        peer = writer.get_extra_info("peercert")
        if peer:
            self.peers.update(v for rdn in peer["subject"] for k, v in rdn if k == "commonName")
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
            writer.close()
