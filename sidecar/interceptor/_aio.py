"""The ``grpc.aio`` interceptors of library mode: one per call shape, and the stream call
wrapper that reports a stream's first message and final status to its admission."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final

import grpc
from grpc.aio import _base_call

from sidecar.interceptor._decide import Protected, decide, method_name
from sidecar.protection import Admission, Rejection

if TYPE_CHECKING:
    from sidecar.interceptor._protection import Protection

__all__ = ["AioStreamStream", "AioStreamUnary", "AioUnaryStream", "AioUnaryUnary"]

_OK: Final = grpc.StatusCode.OK


def _aio_error(rejection: Rejection) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(rejection.code, grpc.aio.Metadata(),
                                grpc.aio.Metadata(*rejection.trailing_metadata),
                                details=rejection.details)


class _AioBase:
    def __init__(self, protection: Protection, upstream: str | None) -> None:
        self._protection = protection
        self._upstream = upstream

    def _admitted(self, details: Any) -> tuple[Protected, Admission] | None:
        """The call's guard and admission, None to pass it through; raises the rejection."""
        decision = decide(self._protection, self._upstream, method_name(details.method))
        if isinstance(decision, Rejection):
            raise _aio_error(decision)
        return decision

    def _details(self, details: Any, target: Protected) -> Any:
        if details.timeout is None:
            return details._replace(timeout=target.timeout_s)
        return details

    async def _unary_response(self, continuation: Callable[..., Any], details: Any,
                              request: Any) -> Any:
        admitted = self._admitted(details)
        if admitted is None:
            return await continuation(details, request)
        target, admission = admitted
        started = perf_counter()
        try:
            call = await continuation(self._details(details, target), request)
            await call
        except grpc.aio.AioRpcError as error:
            admission.settle(error.code(), perf_counter() - started)
            raise
        except asyncio.CancelledError:
            admission.settle(None, 0.0)
            raise
        except BaseException:
            admission.settle(grpc.StatusCode.UNKNOWN, perf_counter() - started)
            raise
        admission.settle(_OK, perf_counter() - started)
        return call

    async def _stream_response(self, continuation: Callable[..., Any], details: Any,
                               request: Any) -> Any:
        admitted = self._admitted(details)
        if admitted is None:
            return await continuation(details, request)
        target, admission = admitted
        started = perf_counter()
        try:
            call = await continuation(self._details(details, target), request)
        except BaseException:
            admission.settle(None, 0.0)
            raise
        return _GuardedStreamCall(call, admission, started)


class AioUnaryUnary(_AioBase, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Callable[..., Any],
                                    client_call_details: Any, request: Any) -> Any:
        return await self._unary_response(continuation, client_call_details, request)


class AioStreamUnary(_AioBase, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(self, continuation: Callable[..., Any],
                                     client_call_details: Any, request_iterator: Any) -> Any:
        return await self._unary_response(continuation, client_call_details, request_iterator)


class AioUnaryStream(_AioBase, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Callable[..., Any],
                                     client_call_details: Any, request: Any) -> Any:
        return await self._stream_response(continuation, client_call_details, request)


class AioStreamStream(_AioBase, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_stream(self, continuation: Callable[..., Any],
                                      client_call_details: Any, request_iterator: Any) -> Any:
        return await self._stream_response(continuation, client_call_details, request_iterator)


class _GuardedStreamCall(_base_call.UnaryStreamCall, _base_call.StreamStreamCall):  # type: ignore[misc]
    """An aio stream call that reports its outcome: first-message time as it is read, final
    status when it ends (or nothing, when the caller cancelled)."""

    def __init__(self, call: Any, admission: Admission, started: float) -> None:
        self._call = call
        self._admission: Admission | None = admission
        self._started = started
        self._first_message_at: float | None = None
        call.add_done_callback(self._on_done)

    # outcome ---------------------------------------------------------------------------------

    def _settle(self, code: grpc.StatusCode | None) -> None:
        admission, self._admission = self._admission, None
        if admission is not None:
            ended = self._first_message_at or perf_counter()
            admission.settle(code, ended - self._started)

    def _on_done(self, call: Any) -> None:
        if self._admission is None:
            return
        if call.cancelled():
            self._settle(None)
        else:
            task = asyncio.get_running_loop().create_task(self._settle_from(call))
            _PENDING.add(task)
            task.add_done_callback(_PENDING.discard)

    async def _settle_from(self, call: Any) -> None:
        self._settle(await call.code())

    def _seen(self, message: Any) -> None:
        if self._first_message_at is None and message is not grpc.aio.EOF:
            self._first_message_at = perf_counter()

    # reading ---------------------------------------------------------------------------------

    async def read(self) -> Any:
        message = await self._call.read()
        self._seen(message)
        return message

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        async for message in self._call:
            self._seen(message)
            yield message

    # delegation ------------------------------------------------------------------------------

    async def write(self, request: Any) -> None:
        await self._call.write(request)

    async def done_writing(self) -> None:
        await self._call.done_writing()

    def cancelled(self) -> bool:
        return bool(self._call.cancelled())

    def done(self) -> bool:
        return bool(self._call.done())

    def time_remaining(self) -> float | None:
        remaining: float | None = self._call.time_remaining()
        return remaining

    def cancel(self) -> bool:
        return bool(self._call.cancel())

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self._call.add_done_callback(lambda _: callback(self))

    async def initial_metadata(self) -> Any:
        return await self._call.initial_metadata()

    async def trailing_metadata(self) -> Any:
        return await self._call.trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        code: grpc.StatusCode = await self._call.code()
        return code

    async def details(self) -> str:
        details: str = await self._call.details()
        return details

    async def wait_for_connection(self) -> None:
        await self._call.wait_for_connection()


_PENDING: set[asyncio.Task[None]] = set()
