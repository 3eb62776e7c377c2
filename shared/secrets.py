"""Secrets and key material: read from a variable or a mounted file, checked before use.

A secret setting ``NAME`` may come from the variable itself or from ``NAME_FILE``, the path of a
file holding it (a Kubernetes Secret mounted as a volume, a Docker or systemd credential), so
it never has to be on a command line. Setting both is refused: which one wins would be a guess.

Certificates and keys are checked when a process starts, with Python's ``ssl``, which uses the
same OpenSSL as kafka-python and grpc's checks of PEM syntax: a file that cannot be read, is not
PEM, or a key that does not belong to its certificate stops the process with one line naming
the setting, instead of failing on every connection later.
"""

from __future__ import annotations

import enum
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

#: Appended to a secret setting's variable for the variant that names a file holding it.
FILE_SUFFIX = "_FILE"


class SecretError(ValueError):
    """A secret or a certificate file cannot be used; the message names the setting."""


class Source(enum.Enum):
    """Where a secret's value came from, which is all ``waitroom settings`` shows of it."""

    UNSET = "(not set)"
    VARIABLE = "(set)"
    FILE = "(from file)"


@dataclass(frozen=True)
class Secret:
    value: str
    source: Source


def read_secret(environ: Mapping[str, str], name: str) -> Secret:
    """The secret ``name`` from ``environ[name]`` or from the file ``environ[name + "_FILE"]``.

    One trailing line break is dropped from a file (``echo`` and most editors add one; a
    Kubernetes Secret has none), anything else is kept as it is.
    """
    file_name = name + FILE_SUFFIX
    if name in environ and file_name in environ:
        raise SecretError(f"set {name} or {file_name}, not both")
    if file_name not in environ:
        if name in environ:
            return Secret(environ[name], Source.VARIABLE)
        return Secret("", Source.UNSET)
    path = environ[file_name]
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"{file_name}={path!r}: cannot read it: {_reason(exc)}") from None
    return Secret(text.removesuffix("\n").removesuffix("\r"), Source.FILE)


def secret_source(environ: Mapping[str, str], name: str) -> Source:
    """Where ``name`` would be read from, without reading it."""
    if name + FILE_SUFFIX in environ:
        return Source.FILE
    return Source.VARIABLE if name in environ else Source.UNSET


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    return str(exc) or type(exc).__name__


def _readable(setting: str, path: str) -> None:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise SecretError(f"{setting}={path!r}: cannot read it: {_reason(exc)}") from None


def check_ca(setting: str, path: str) -> None:
    """Raise SecretError unless ``path`` holds at least one PEM certificate."""
    _readable(setting, path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise SecretError(
            f"{setting}={path!r} holds no usable CA certificate: {_reason(exc)}"
        ) from None


def check_key_pair(
    cert_setting: str,
    certfile: str,
    key_setting: str,
    keyfile: str,
    password: str = "",
    *,
    password_setting: str = "",
    server: bool = False,
) -> None:
    """Raise SecretError unless ``certfile`` holds a PEM certificate and ``keyfile`` (or
    ``certfile`` when empty) its private key, decrypted by ``password`` if encrypted; the
    message names the setting at fault."""
    _readable(cert_setting, certfile)
    if keyfile:
        _readable(key_setting, keyfile)
    try:
        with open(certfile, encoding="ascii") as handle:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=handle.read())
    except (ssl.SSLError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise SecretError(
            f"{cert_setting}={certfile!r} holds no PEM certificate: {_reason(exc)}"
        ) from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    try:
        # A callable, never None: with None, OpenSSL asks for the password of an encrypted key
        # on the terminal, and a process started by hand would hang there.
        context.load_cert_chain(certfile, keyfile or None, lambda: password.encode())
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise SecretError(
                f"{key_setting}={keyfile!r} is not the key of the certificate in "
                f"{cert_setting}={certfile!r}"
            ) from None
        if not keyfile:
            raise SecretError(
                f"{key_setting} is empty and {cert_setting}={certfile!r} holds no private key "
                "that can be loaded"
            ) from None
        hint = f" (or {password_setting} is wrong)" if password_setting else ""
        raise SecretError(
            f"{key_setting}={keyfile or certfile!r} holds no PEM private key that can be "
            f"loaded{hint}"
        ) from None


def read_bytes(setting: str, path: str) -> bytes:
    """The contents of the file a setting names (certificates handed to grpc as bytes)."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise SecretError(f"{setting}={path!r}: cannot read it: {_reason(exc)}") from None
