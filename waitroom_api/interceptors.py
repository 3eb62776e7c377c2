"""A server interceptor that times every call and turns undecodable requests into WTR007.

Timing: ``waitroom_rpc_duration_seconds`` by method and status code. Unary calls are timed to
their response; streams to their first message (or to their end, when they fail before sending
one), since an open stream's lifetime says nothing about speed. A stream handler either yields
its messages or writes them through the context (``context.write``: no generator between it
and grpc, as StreamQueuePosition does, the API's busiest path); the latter is given a context
whose first ``write`` is timed.

Undecodable requests: grpc.aio decodes a request before it calls the handler, outside every
interceptor, and a ``DecodeError`` there reaches grpc's own exception handler, which logs a
full traceback at ERROR and answers UNKNOWN with the exception's text (read in grpc's
``_cygrpc/aio/server.pyx.pxi``: ``_handle_unary_unary_rpc`` calls ``deserialize`` and only
``_handle_exceptions`` catches what it raises). So each handler is re-registered with a
deserializer that never raises: a request it cannot decode becomes an ``Undecodable`` marker,
which the wrapped handler answers with INVALID_ARGUMENT and one WARNING line, timed like any
other call.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from grpc import aio

from shared import metrics
from shared.errors import Code, WaitroomError

log = logging.getLogger(__name__)

Context = aio.ServicerContext[Any, Any]


@dataclass(frozen=True)
class Undecodable:
    """What a request that is not a valid message of its method decodes to."""

    error: str


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer``, returning ``Undecodable`` instead of raising."""
    if deserializer is None:
        return None
    decode = deserializer

    def tolerant(raw: bytes) -> Any:
        try:
            return decode(raw)
        except Exception as exc:  # whatever the parser raises, the bytes were the caller's
            return Undecodable(f"{type(exc).__name__}: {exc}")

    return tolerant


async def _refuse(method: str, request: Undecodable, context: Context) -> NoReturn:
    """End the call with WTR007; one log line, as for any other invalid input."""
    log.warning("refused an undecodable %s request from %s: %s", method, context.peer(), request)
    refusal = WaitroomError(Code.INVALID_INPUT, f"the request is not a valid {method} message")
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, refusal.message)
    raise AssertionError("context.abort returned")  # abort always raises; for the type checker


def _code_name(context: aio.ServicerContext[Any, Any], failed: BaseException | None) -> str:
    code: Any = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        # Some grpcio versions report the numeric code; map it back to its name.
        for candidate in grpc.StatusCode:
            if candidate.value[0] == code:
                return candidate.name
    if failed is None:
        return "OK"
    # An exception without a status reaches the client as UNKNOWN; a cancelled handler
    # (client gone, server stopping) raises a BaseException such as CancelledError.
    return "UNKNOWN" if isinstance(failed, Exception) else "CANCELLED"


def _observe(method: str, started: float, context: Any, failed: BaseException | None) -> None:
    metrics.RPC_DURATION.labels(method, _code_name(context, failed)).observe(
        time.perf_counter() - started
    )


def _time_unary(method: str, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    async def timed(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        try:
            if isinstance(request, Undecodable):
                await _refuse(method, request, context)
            response = await behavior(request, context)
        except BaseException as exc:
            _observe(method, started, context, exc)
            raise
        _observe(method, started, context, None)
        return response

    return timed


def _time_stream(method: str, behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., Any]:
    async def timed(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        started = time.perf_counter()
        observed = False
        try:
            if isinstance(request, Undecodable):
                await _refuse(method, request, context)
            async for item in behavior(request, context):
                if not observed:
                    observed = True
                    _observe(method, started, context, None)
                yield item
        except BaseException as exc:
            if not observed:
                _observe(method, started, context, exc)
            raise
        if not observed:
            _observe(method, started, context, None)

    return timed


class _TimedContext:
    """A call's context whose first ``write`` records the call's duration; every other
    attribute is the context's own. After that first write, ``write`` is the context's own
    too (an instance attribute), so later messages cost nothing more."""

    def __init__(self, method: str, started: float, context: Context) -> None:
        self.observed = False
        self._method = method
        self._started = started
        self._context = context

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def write(self, message: Any) -> None:
        if not self.observed:
            self.observed = True
            _observe(self._method, self._started, self._context, None)
            self.write = self._context.write  # type: ignore[method-assign]
        await self._context.write(message)


def _time_writer(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
    """A stream handler that writes through the context (StreamQueuePosition, the health
    Watch): timed to its first message, like one that yields."""

    async def timed(request: Any, context: Context) -> None:
        started = time.perf_counter()
        timed_context = _TimedContext(method, started, context)
        try:
            if isinstance(request, Undecodable):
                await _refuse(method, request, context)
            await behavior(request, timed_context)
        except BaseException as exc:
            if not timed_context.observed:
                _observe(method, started, context, exc)
            raise
        if not timed_context.observed:
            _observe(method, started, context, None)

    return timed


async def _checked(
    method: str, requests: AsyncIterator[Any], context: Context
) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Undecodable):
            await _refuse(method, request, context)
        yield request


def _guard_request_stream(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
    """A request-streaming handler (server reflection) that never sees an undecodable request."""

    async def guarded(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        async for response in behavior(_checked(method, requests, context), context):
            yield response

    return guarded


class MetricsInterceptor(aio.ServerInterceptor):
    """Wraps every handler: timing for unary-request RPCs (ours and the health service's), and
    a WTR007 answer for undecodable requests to any of them."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        decode = _tolerant(handler.request_deserializer)
        encode = handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _time_unary(method, handler.unary_unary),
                request_deserializer=decode,
                response_serializer=encode,
            )
        if handler.unary_stream is not None:
            behavior = handler.unary_stream
            # Async-generator handlers yield; others write via the context.
            wrapped = (
                _time_stream(method, behavior)
                if inspect.isasyncgenfunction(behavior)
                else _time_writer(method, behavior)
            )
            return grpc.unary_stream_rpc_method_handler(
                wrapped, request_deserializer=decode, response_serializer=encode
            )
        if handler.stream_stream is not None and inspect.isasyncgenfunction(handler.stream_stream):
            return grpc.stream_stream_rpc_method_handler(
                _guard_request_stream(method, handler.stream_stream),
                request_deserializer=decode,
                response_serializer=encode,
            )
        # No such handler is registered; were one added, it keeps grpc's own decoding.
        return handler
