"""Turning failures into gRPC statuses, so no exception ever reaches grpc as an UNKNOWN.

A ``WaitroomError`` becomes the status of its kind with ``WTR0xx - text`` as details; a Redis
outage (``shared.backoff.is_transient``) becomes UNAVAILABLE (callers may retry); anything else,
a script error included, is a bug: logged with its traceback, counted, and INTERNAL.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, Protocol, TypeVar

import grpc
from grpc import aio

from shared.backoff import Outage, bug, is_transient
from shared.errors import Code, ErrorKind, WaitroomError

log = logging.getLogger(__name__)

STATUS_OF_KIND = {
    ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorKind.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
}

REDIS_DOWN_TEXT = "the waiting room's store (Redis) is unreachable; try again shortly"

MAX_TEXT_LENGTH = 1024


def validate_text(name: str, value: str) -> str:
    """A free-text request field (user agent, IP): at most 1024 characters, no control chars."""
    if len(value) > MAX_TEXT_LENGTH:
        raise WaitroomError(
            Code.INVALID_INPUT, f"{name} is {len(value)} characters; at most {MAX_TEXT_LENGTH}"
        )
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise WaitroomError(Code.INVALID_INPUT, f"{name} contains a control character")
    return value


class HasOutage(Protocol):
    """A servicer that tracks Redis outages seen by its requests (logged once per outage)."""

    redis_outage: Outage


async def abort_for(
    exc: Exception, context: aio.ServicerContext[Any, Any], owner: HasOutage
) -> NoReturn:
    """End the call with the status that ``exc`` deserves."""
    if isinstance(exc, aio.AbortError):
        raise exc  # the handler already chose a status
    if isinstance(exc, WaitroomError):
        await context.abort(STATUS_OF_KIND[exc.code.kind], exc.message)
    if is_transient(exc):
        owner.redis_outage.failed(exc)
        await context.abort(grpc.StatusCode.UNAVAILABLE, REDIS_DOWN_TEXT)
    bug(log, "api request", exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; it has been logged")


S = TypeVar("S", bound=HasOutage)
Req = TypeVar("Req")
Resp = TypeVar("Resp")
UnaryHandler = Callable[[S, Req, aio.ServicerContext[Req, Resp]], Awaitable[Resp]]
StreamHandler = Callable[[S, Req, aio.ServicerContext[Req, Resp]], AsyncIterator[Resp]]


def unary(handler: UnaryHandler[S, Req, Resp]) -> UnaryHandler[S, Req, Resp]:
    """Wrap a unary RPC method so every failure becomes a proper status."""

    @functools.wraps(handler)
    async def wrapper(self: S, request: Req, context: aio.ServicerContext[Req, Resp]) -> Resp:
        try:
            response = await handler(self, request, context)
        except Exception as exc:
            await abort_for(exc, context, self)
        self.redis_outage.recovered()
        return response

    return wrapper


def streaming(handler: StreamHandler[S, Req, Resp]) -> StreamHandler[S, Req, Resp]:
    """Wrap a server-streaming RPC method so every failure becomes a proper status."""

    @functools.wraps(handler)
    async def wrapper(
        self: S, request: Req, context: aio.ServicerContext[Req, Resp]
    ) -> AsyncIterator[Resp]:
        try:
            async for item in handler(self, request, context):
                yield item
        except Exception as exc:
            await abort_for(exc, context, self)

    return wrapper
