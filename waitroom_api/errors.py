"""Turning failures into gRPC statuses, so no exception ever reaches grpc as an UNKNOWN.

A ``WaitroomError`` becomes the status of its kind with ``WTR0xx - text`` as details; a Redis
outage (``shared.backoff.is_transient``) becomes UNAVAILABLE (callers may retry); anything else,
a script error included, is a bug: logged with its traceback, counted, and INTERNAL. The
free-text fields of a join (user agent, IP address) are checked here too; ids are checked by
``shared.ids``.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, Protocol, TypeVar

import grpc
from grpc import aio

from shared.backoff import Outage, bug, is_transient
from shared.errors import Code, ErrorKind, WaitroomError
from shared.ids import check_characters

log = logging.getLogger(__name__)

STATUS_OF_KIND = {
    ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorKind.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}

REDIS_DOWN_TEXT = "the waiting room's store (Redis) is unreachable; try again shortly"

#: The longest user agent kept; longer ones are cut, as the old service did, not refused:
#: a browser's user agent is not the caller's mistake.
MAX_USER_AGENT_LENGTH = 1024


def validate_user_agent(value: str) -> str:
    """The user agent cut to ``MAX_USER_AGENT_LENGTH``; WTR007 if it holds a character no
    HTTP header can carry (see ``shared.ids.refused_character``)."""
    return check_characters("user_agent", value[:MAX_USER_AGENT_LENGTH])


def validate_ip(value: str) -> str:
    """The caller's IPv4 or IPv6 address in its canonical form; empty stays empty (the gateway
    may not know it); WTR007 if it is not an address.

    A zone index (``fe80::1%eth0``) is refused: it names an interface of the gateway's own
    host, never a browser's address, and ``ipaddress`` accepts any text after the ``%``.
    """
    if not value:
        return ""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        address = None
    if address is None or (isinstance(address, ipaddress.IPv6Address) and address.scope_id):
        shown = value[:64].encode("unicode_escape").decode("ascii")
        raise WaitroomError(
            Code.INVALID_INPUT, f"ip_address {shown!r} is not an IPv4 or IPv6 address"
        )
    return str(address)


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
WriterHandler = Callable[[S, Req, aio.ServicerContext[Req, Resp]], Awaitable[None]]


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


def streaming(handler: WriterHandler[S, Req, Resp]) -> WriterHandler[S, Req, Resp]:
    """Wrap a server-streaming RPC method that writes its messages through the context
    (``context.write``) so every failure becomes a proper status. One await around the whole
    call, nothing per message (a generator here cost one more resumption per update)."""

    @functools.wraps(handler)
    async def wrapper(self: S, request: Req, context: aio.ServicerContext[Req, Resp]) -> None:
        try:
            await handler(self, request, context)
        except Exception as exc:
            await abort_for(exc, context, self)

    return wrapper
