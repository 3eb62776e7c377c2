"""A server interceptor recording ``waitroom_rpc_duration_seconds`` by method and status code.

Unary calls are timed to their response; streams to their first message (or to their end,
when they fail before sending one), since an open stream's lifetime says nothing about speed.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from shared import metrics


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


class MetricsInterceptor(aio.ServerInterceptor):
    """Wraps the handlers of unary-request RPCs (ours and the health service's) with timing."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler
        method = handler_call_details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _time_unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        behavior = handler.unary_stream
        # Async-generator handlers yield; others (the health Watch) write via the context.
        if behavior is not None and inspect.isasyncgenfunction(behavior):
            return grpc.unary_stream_rpc_method_handler(
                _time_stream(method, behavior),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
