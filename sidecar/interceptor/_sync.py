"""The sync ``grpc`` interceptor of library mode (all four call shapes in one object), and the
call objects a sync caller gets: a rejection that is an ``RpcError``, a watched stream."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from time import perf_counter
from typing import TYPE_CHECKING, Any

import grpc

from sidecar.interceptor._decide import decide, method_name
from sidecar.protection import Admission, Rejection

if TYPE_CHECKING:
    from sidecar.interceptor._protection import Protection

__all__ = ["SyncInterceptor"]


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


class SyncInterceptor(
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
        decision = decide(self._protection, self._upstream, method_name(details.method))
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
