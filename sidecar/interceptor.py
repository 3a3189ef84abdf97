"""Library mode: the sidecar's breakers as in-process gRPC client interceptors.

For apps that prefer no extra hop: the same config, the same breakers, the same admission
(breaker, then ``max_concurrent_requests``), the same outcome classification and the same
default deadline (``timeout_ms``) as the proxy, applied inside the app's own channel. All of it
comes from :mod:`sidecar.protection.guard`; nothing is re-implemented here.

Example (grpc.aio)::

    protection = Protection(load_config("sidecar.yaml"))
    channel = grpc.aio.insecure_channel("payments:50051",
                                        interceptors=protection.aio_interceptors())

Example (sync grpc)::

    channel = grpc.intercept_channel(grpc.insecure_channel("payments:50051"),
                                     *protection.sync_interceptors())

Which breaker guards a call: the upstream whose route (longest method-path prefix) matches the
method, as in the proxy, or the one named by ``aio_interceptors(upstream="payments")`` for a
channel that only talks to that upstream. A method no route matches passes through untouched.

Rejections look like the proxy's: a ``grpc.RpcError`` (``AioRpcError`` in aio) with status
UNAVAILABLE and trailing metadata ``x-sidecar-breaker: open``, ``x-sidecar-upstream``,
``x-sidecar-retry-after-ms``; RESOURCE_EXHAUSTED with ``x-sidecar-overflow: true`` over the
limit; a fixed-status fallback answers with its status. A fallback to another *upstream* needs
the proxy (an interceptor has no channel to it): in library mode such a call is rejected.

Endpoints: library mode guards the calls of a channel the app dialled itself, so everything
about endpoints (several addresses, discovery, per-call balancing, outlier ejection) needs the
proxy; the ``endpoints``, ``discovery``, ``balancer`` and ``outlier_detection`` keys are ignored
here (gRPC's own ``round_robin`` policy over a ``dns:///`` target spreads calls over replicas).

Streams: duration is the time to the first response message the caller reads (or to the end
when none), failure is the final status, as documented in :mod:`sidecar.protection.guard`. A call
the caller cancels counts nothing.

Threading: the aio interceptors run on the channel's event loop; the sync ones in the calling
thread, and their outcome callbacks in grpc's threads. Both only do O(1), non-blocking work.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from time import perf_counter
from typing import Any, Final

import grpc
from grpc.aio import _base_call

from sidecar.breaker import BreakerListener
from sidecar.config import SidecarConfig
from sidecar.protection import (
    NOOP_SCOPE,
    Admission,
    BreakerRegistry,
    GuardSettings,
    Rejection,
    RouteTable,
    UpstreamGuard,
    admit,
)

__all__ = ["Protection"]

_log = logging.getLogger("sidecar.interceptor")
_OK: Final = grpc.StatusCode.OK


class _Protected:
    """One upstream in library mode: its guard and default deadline."""

    __slots__ = ("guard", "timeout_s")

    def __init__(self, guard: UpstreamGuard, timeout_s: float) -> None:
        self.guard = guard
        self.timeout_s = timeout_s


def _no_channel(name: str) -> _Protected | None:
    return None  # library mode cannot reach a fallback upstream: no channel to it


class Protection:
    """Breakers and limits for in-process calls, built from a :class:`SidecarConfig`.

    ``breakers`` is the same kind of registry the proxy uses (listeners for metrics or events
    attach there). :meth:`reload` applies a new config keeping breaker state, like SIGHUP does
    for the proxy.
    """

    def __init__(self, config: SidecarConfig,
                 breaker_listeners: Sequence[BreakerListener] = ()) -> None:
        self.breakers = BreakerRegistry(breaker_listeners)
        self._upstreams: dict[str, _Protected] = {}
        self._routes: RouteTable[_Protected] = RouteTable({})
        self.reload(config)

    def reload(self, config: SidecarConfig) -> None:
        upstreams: dict[str, _Protected] = {}
        for name, upstream in config.upstreams.items():
            settings = GuardSettings.from_config(upstream)
            current = self._upstreams.get(name)
            if current is not None and current.guard.settings.per_method == upstream.per_method:
                current.guard.reconfigure(settings)
                current.timeout_s = upstream.timeout_ms / 1000.0
                upstreams[name] = current
            else:
                if current is not None:
                    self.breakers.discard(current.guard.breaker_names())
                upstreams[name] = _Protected(UpstreamGuard(name, settings, self.breakers),
                                             upstream.timeout_ms / 1000.0)
        for name, gone in self._upstreams.items():
            if name not in upstreams:
                self.breakers.discard(gone.guard.breaker_names())
        self._upstreams = upstreams
        self._routes = RouteTable({route: upstreams[name]
                                   for name, upstream in config.upstreams.items()
                                   for route in upstream.routes})

    def _target(self, method: str, pinned: str | None) -> _Protected | None:
        if pinned is not None:
            return self._upstreams.get(pinned)
        return self._routes.match(method)

    def aio_interceptors(self, upstream: str | None = None) -> list[grpc.aio.ClientInterceptor]:
        """Interceptors for ``grpc.aio`` channels, one per call shape (pass all four)."""
        self._check(upstream)
        return [_AioUnaryUnary(self, upstream), _AioUnaryStream(self, upstream),
                _AioStreamUnary(self, upstream), _AioStreamStream(self, upstream)]

    def sync_interceptors(self, upstream: str | None = None) -> list[Any]:
        """Interceptors for ``grpc.intercept_channel`` (all four call shapes in one object)."""
        self._check(upstream)
        return [_SyncInterceptor(self, upstream)]

    def _check(self, upstream: str | None) -> None:
        if upstream is not None and upstream not in self._upstreams:
            raise ValueError(f"upstream: no upstream named {upstream!r} in the config; "
                             f"known: {', '.join(sorted(self._upstreams))}")


def _method_name(method: str | bytes) -> str:
    return method.decode() if isinstance(method, bytes) else method


def _decide(protection: Protection, pinned: str | None, method: str
            ) -> tuple[_Protected, Admission] | Rejection | None:
    target = protection._target(method, pinned)
    if target is None:
        return None
    return admit(target, method, NOOP_SCOPE, _no_channel)


# --- grpc.aio --------------------------------------------------------------------------------


def _aio_error(rejection: Rejection) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(rejection.code, grpc.aio.Metadata(),
                                grpc.aio.Metadata(*rejection.trailing_metadata),
                                details=rejection.details)


class _AioBase:
    def __init__(self, protection: Protection, upstream: str | None) -> None:
        self._protection = protection
        self._upstream = upstream

    def _details(self, details: Any, target: _Protected) -> Any:
        if details.timeout is None:
            return details._replace(timeout=target.timeout_s)
        return details

    async def _unary_response(self, continuation: Callable[..., Any], details: Any,
                              request: Any) -> Any:
        decision = _decide(self._protection, self._upstream, _method_name(details.method))
        if decision is None:
            return await continuation(details, request)
        if isinstance(decision, Rejection):
            raise _aio_error(decision)
        target, admission = decision
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
        decision = _decide(self._protection, self._upstream, _method_name(details.method))
        if decision is None:
            return await continuation(details, request)
        if isinstance(decision, Rejection):
            raise _aio_error(decision)
        target, admission = decision
        started = perf_counter()
        try:
            call = await continuation(self._details(details, target), request)
        except BaseException:
            admission.settle(None, 0.0)
            raise
        return _GuardedStreamCall(call, admission, started)


class _AioUnaryUnary(_AioBase, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Callable[..., Any],
                                    client_call_details: Any, request: Any) -> Any:
        return await self._unary_response(continuation, client_call_details, request)


class _AioStreamUnary(_AioBase, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(self, continuation: Callable[..., Any],
                                     client_call_details: Any, request_iterator: Any) -> Any:
        return await self._unary_response(continuation, client_call_details, request_iterator)


class _AioUnaryStream(_AioBase, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Callable[..., Any],
                                     client_call_details: Any, request: Any) -> Any:
        return await self._stream_response(continuation, client_call_details, request)


class _AioStreamStream(_AioBase, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
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


# --- sync grpc ---------------------------------------------------------------------------------


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,  # type: ignore[misc]
):
    pass


class _RejectedCall(grpc.RpcError, grpc.Call, grpc.Future):  # type: ignore[misc]
    """What a sync caller gets instead of a call the guard refused: an RpcError that is also
    the Call/Future (and response iterator) grpc's interceptor API expects."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__()
        self._rejection = rejection

    def code(self) -> grpc.StatusCode:
        return self._rejection.code

    def details(self) -> str:
        return self._rejection.details

    def initial_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._rejection.trailing_metadata

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def running(self) -> bool:
        return False

    def done(self) -> bool:
        return True

    def result(self, timeout: float | None = None) -> Any:
        raise self

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self

    def traceback(self, timeout: float | None = None) -> Any:
        return None

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        fn(self)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        raise self

    def __str__(self) -> str:
        return f"<sidecar rejected call: {self._rejection.code.name}: {self._rejection.details}>"


class _SyncStreamCall:
    """Wraps a sync response-stream call to note when the first message is read."""

    def __init__(self, call: Any, watch: _SyncOutcome) -> None:
        self._call = call
        self._watch = watch

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        message = next(self._call)
        if self._watch.first_message_at is None:
            self._watch.first_message_at = perf_counter()
        return message

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


class _SyncOutcome:
    """Settles an admission from a sync call's done callback (grpc's thread), once."""

    __slots__ = ("_admission", "_started", "first_message_at")

    def __init__(self, admission: Admission, started: float) -> None:
        self._admission: Admission | None = admission
        self._started = started
        self.first_message_at: float | None = None

    def __call__(self, call: Any) -> None:
        admission, self._admission = self._admission, None
        if admission is None:
            return
        code = None if call.cancelled() else call.code()
        admission.settle(code, (self.first_message_at or perf_counter()) - self._started)


class _SyncInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    def __init__(self, protection: Protection, upstream: str | None) -> None:
        self._protection = protection
        self._upstream = upstream

    def _intercept(self, continuation: Callable[..., Any], details: Any, request: Any,
                   stream_response: bool) -> Any:
        decision = _decide(self._protection, self._upstream, _method_name(details.method))
        if decision is None:
            return continuation(details, request)
        if isinstance(decision, Rejection):
            return _RejectedCall(decision)
        target, admission = decision
        if details.timeout is None:
            details = _CallDetails(details.method, target.timeout_s, details.metadata,
                                   details.credentials, details.wait_for_ready,
                                   getattr(details, "compression", None))
        outcome = _SyncOutcome(admission, perf_counter())
        try:
            call = continuation(details, request)
        except BaseException:
            admission.settle(None, 0.0)
            raise
        if stream_response:
            call = _SyncStreamCall(call, outcome)
        call.add_done_callback(outcome)
        return call

    def intercept_unary_unary(self, continuation: Callable[..., Any], client_call_details: Any,
                              request: Any) -> Any:
        return self._intercept(continuation, client_call_details, request, False)

    def intercept_stream_unary(self, continuation: Callable[..., Any], client_call_details: Any,
                               request_iterator: Any) -> Any:
        return self._intercept(continuation, client_call_details, request_iterator, False)

    def intercept_unary_stream(self, continuation: Callable[..., Any], client_call_details: Any,
                               request: Any) -> Any:
        return self._intercept(continuation, client_call_details, request, True)

    def intercept_stream_stream(self, continuation: Callable[..., Any], client_call_details: Any,
                                request_iterator: Any) -> Any:
        return self._intercept(continuation, client_call_details, request_iterator, True)
