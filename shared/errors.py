"""The contract's error codes (``WTR0xx``) and the exception that carries them."""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    """What went wrong, independent of transport; the API maps each to a gRPC status."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    FAILED_PRECONDITION = "failed_precondition"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    UNAVAILABLE = "unavailable"


class Code(enum.Enum):
    """Stable code prefixes the old service sent and clients match on."""

    SESSION_NOT_FOUND = ("WTR001", ErrorKind.NOT_FOUND)
    SESSION_EXPIRED = ("WTR002", ErrorKind.FAILED_PRECONDITION)
    SESSION_EXISTS = ("WTR003", ErrorKind.ALREADY_EXISTS)
    INVALID_STATUS = ("WTR004", ErrorKind.FAILED_PRECONDITION)
    QUEUE_FULL = ("WTR005", ErrorKind.RESOURCE_EXHAUSTED)
    EVENT_NOT_FOUND = ("WTR006", ErrorKind.NOT_FOUND)
    INVALID_INPUT = ("WTR007", ErrorKind.INVALID_ARGUMENT)
    EVENT_CONFIG_NOT_FOUND = ("WTR008", ErrorKind.NOT_FOUND)
    EVENT_CLOSED = ("WTR009", ErrorKind.FAILED_PRECONDITION)
    TOO_MANY_REQUESTS = ("WTR010", ErrorKind.RESOURCE_EXHAUSTED)  # a per-address join limit
    # Redis restarted or failed over and the event is not yet checked against Kafka, or it is
    # being rebuilt from Kafka: retry shortly (docs/reliability.md).
    RECOVERING = ("WTR011", ErrorKind.UNAVAILABLE)

    @property
    def prefix(self) -> str:
        return self.value[0]

    @property
    def kind(self) -> ErrorKind:
        return self.value[1]


class WaitroomError(Exception):
    """A failure a caller should see, rendered as ``WTR0xx - text``."""

    def __init__(self, code: Code, text: str) -> None:
        super().__init__(f"{code.prefix} - {text}")
        self.code = code
        self.text = text

    @property
    def message(self) -> str:
        return f"{self.code.prefix} - {self.text}"


class Refused(Exception):
    """An operator's request that cannot be done as asked (e.g. creating an event that
    exists). Not a contract error: it carries no ``WTR0xx`` code, only its sentence."""
