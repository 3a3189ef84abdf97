"""Turn undecodable request bytes into INVALID_ARGUMENT on any grpc.aio server.

Why: grpc.aio decodes a request with the handler's ``request_deserializer`` before the servicer
runs. When the bytes are not a valid message (a fuzzer, a client built from another proto, a
corrupted frame), the library answers ``UNKNOWN: Unexpected <class 'DecodeError'>`` and logs a
full traceback at ERROR for every such call: the client gets no clear reason and anyone can
flood the server's log. :class:`DecodeGuardInterceptor` wraps each handler's deserializer so a
failure becomes a marker value, and ends the call with ``INVALID_ARGUMENT`` naming the method
before the servicer sees anything. Valid requests pass through unchanged.

Order: put it *after* an authentication interceptor (``interceptors=[auth, guard]``), so an
unauthenticated caller is told UNAUTHENTICATED whatever bytes it sent.

Threading: runs on the server's event loop; does no I/O. Handlers whose behaviour is neither a
coroutine function nor an async generator function (sync handlers) are left as they are.

Example::

    server = grpc.aio.server(interceptors=[DecodeGuardInterceptor()])
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import grpc

__all__ = ["MAX_REASON_CHARS", "DecodeGuardInterceptor"]

MAX_REASON_CHARS: Final = 200
"""Longest decoder message quoted in the status details (the rest is cut)."""

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class _Undecodable:
    """Stands in for a request whose bytes did not decode."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _safe(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # any decoder failure is the caller's bad input
            return _Undecodable(f"{type(exc).__name__}: {exc}"[:MAX_REASON_CHARS])

    return decode


def _details(method: str, bad: _Undecodable) -> str:
    return f"{method}: request is not a valid message ({bad.reason})"


class DecodeGuardInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Ends calls whose request bytes do not decode with INVALID_ARGUMENT (see module doc)."""

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        return _guarded(handler, str(handler_call_details.method))


def _guarded(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    kwargs = {
        "request_deserializer": _safe(handler.request_deserializer),
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming:
        behavior = handler.stream_stream if handler.response_streaming else handler.stream_unary
        wrapped = _wrap(behavior, _checked_stream(method))
    else:
        behavior = handler.unary_stream if handler.response_streaming else handler.unary_unary
        wrapped = _wrap(behavior, _checked_single(method))
    if wrapped is None:
        return handler
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(wrapped, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(wrapped, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(wrapped, **kwargs)
    return grpc.unary_unary_rpc_method_handler(wrapped, **kwargs)


Check = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def _checked_single(method: str) -> Check:
    async def check(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, _Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _details(method, request))
        return request

    return check


def _checked_stream(method: str) -> Check:
    async def check(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        async def each() -> AsyncIterator[Any]:
            async for request in requests:
                if isinstance(request, _Undecodable):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                        _details(method, request))
                yield request

        return each()

    return check


def _wrap(behavior: Any, check: Check) -> Any:
    """The same kind of callable as ``behavior`` (coroutine or async generator function)."""
    if inspect.iscoroutinefunction(behavior):

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            return await behavior(await check(request, context), context)

        return call
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for response in behavior(await check(request, context), context):
                yield response

        return stream
    return None
