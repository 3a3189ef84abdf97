"""The data path: a generic gRPC handler that forwards any method as raw bytes.

Every call the host app sends to ``listen`` is routed by method path (longest route prefix wins)
to an upstream, admitted by that upstream's guard (breaker, then concurrency limit; see
:mod:`sidecar.protection.guard` for how outcomes are classified), and forwarded on the
upstream's one long-lived channel. Messages are never decoded: request and response
serializers are identity.

Faithful forwarding
-------------------
- Request metadata goes upstream minus hop-by-hop headers (:data:`HOP_BY_HOP`, pseudo-headers,
  and ``grpc-*`` reserved keys other than tracing ones). ``user-agent`` is per channel in grpc
  and is not forwarded.
- Response initial metadata, trailing metadata, status code and details come back verbatim.
  Only answers the sidecar makes itself (breaker rejections, fallbacks, overflow) carry
  ``x-sidecar-*`` trailing metadata; a call a fallback *upstream* answered additionally carries
  ``x-sidecar-fallback: upstream``.
- Deadline: the caller's remaining time goes upstream; without one, the upstream's
  ``timeout_ms`` applies.
- Cancellation both ways: a caller that cancels (or disconnects) cancels the upstream call; an
  upstream that answers CANCELLED is answered CANCELLED.

Call shapes: all four look the same on the wire, so an unknown method is forwarded as a bidi
stream, which is correct for every shape. Methods whose shape the upstream's server reflection
reports use grpc's native handler for that shape, which costs fewer event-loop round trips
(see :mod:`sidecar.proxy._shapes`).

Threading: everything runs on the proxy's asyncio loop; nothing here blocks. Breaker and
observer calls are synchronous and O(1).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import Any, Final, TypeAlias

import grpc

from sidecar.balancer import Balancer, Endpoint
from sidecar.protection import (
    MD_FALLBACK,
    MD_UPSTREAM,
    NOOP_OBSERVER,
    NOOP_SCOPE,
    Admission,
    CallInfo,
    CallKind,
    CallObserver,
    CallScope,
    MetadataItem,
    Rejection,
    admit,
)
from sidecar.proxy._attempts import no_endpoints_details
from sidecar.proxy._hedging import forward_hedged
from sidecar.proxy._request_buffer import pump_requests
from sidecar.proxy._retrying import CallPlan, forward_retried
from sidecar.proxy.upstream import MAX_CACHED_HANDLERS, Connection, EndpointLink, Routing, Upstream
from sidecar.resilience import HedgingPolicy, RetryPolicy

_log = logging.getLogger("sidecar.proxy")

HOP_BY_HOP: Final = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "transfer-encoding", "upgrade", "host", "user-agent", "content-type",
    "content-length",
})
"""Request headers that describe one hop, never forwarded."""
_KEPT_GRPC_KEYS: Final = frozenset({"grpc-trace-bin", "grpc-tags-bin"})

_EOF: Final = grpc.aio.EOF
_OK: Final = grpc.StatusCode.OK
_CANCELLED: Final = grpc.StatusCode.CANCELLED
_DEADLINE_EXCEEDED: Final = grpc.StatusCode.DEADLINE_EXCEEDED
_UNAVAILABLE: Final = grpc.StatusCode.UNAVAILABLE
_FALLBACK_UPSTREAM_MD: Final = ((MD_FALLBACK, "upstream"),)

Context: TypeAlias = Any  # grpc.aio.ServicerContext; grpc ships no type hints


class _Attempt:
    """One call's trip to one endpoint: the breaker admission, the endpoint the balancer chose,
    and the connection it went on. :meth:`settle` reports the outcome to all three once."""

    __slots__ = ("admission", "balancer", "connection", "endpoint")

    def __init__(self, admission: Admission, balancer: Balancer[EndpointLink],
                 endpoint: Endpoint[EndpointLink]) -> None:
        self.admission = admission
        self.balancer = balancer
        self.endpoint = endpoint
        self.connection: Connection = endpoint.target.connection
        balancer.start(endpoint)

    def settle(self, code: grpc.StatusCode | None, started: float, answered: float) -> None:
        """``code`` None: the caller cancelled (nothing counted). ``answered``: the first
        response message, or the end of the call (the duration the breaker and the latency
        estimate judge)."""
        duration_s = answered - started
        self.admission.settle(code, duration_s)
        if code is None:
            self.balancer.cancel(self.endpoint)
        else:
            self.balancer.finish(self.endpoint, started, code in self.admission.guard.failure_codes,
                                 latency_s=duration_s)


def _outgoing_metadata(incoming: Sequence[MetadataItem]) -> list[MetadataItem]:
    return [
        (key, value)
        for key, value in incoming
        if key not in HOP_BY_HOP and key[0] != ":"
        and (not key.startswith("grpc-") or key in _KEPT_GRPC_KEYS)
    ]


def _ended_by_caller(context: Context) -> grpc.StatusCode | None:
    """Why the caller went away: DEADLINE_EXCEEDED when its deadline passed (an outcome the
    breaker counts), None when it cancelled (nothing to count)."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return _DEADLINE_EXCEEDED
    return None


class ProxyHandler(grpc.GenericRpcHandler):  # type: ignore[misc]
    """The generic handler serving every method on ``listen``.

    :meth:`set_routing` swaps the routing generation atomically (a reload); calls in flight
    finish on the generation they started with.
    """

    def __init__(self, routing: Routing, observer: CallObserver = NOOP_OBSERVER) -> None:
        self._routing = routing
        self._observer = observer
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    @property
    def routing(self) -> Routing:
        return self._routing

    def set_observer(self, observer: CallObserver) -> None:
        self._observer = observer
        self._handlers = {}

    def set_routing(self, routing: Routing) -> None:
        self._routing = routing
        self._handlers = {}

    def forget_handlers(self) -> None:
        """Drop memoised handlers (a method's shape became known)."""
        self._handlers = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None:
            handler = self._build(method)
            if len(self._handlers) >= MAX_CACHED_HANDLERS:
                self._handlers = {}
            self._handlers[method] = handler
        return handler

    # --- handler construction (once per method and routing generation) --------------------

    def _build(self, method: str) -> grpc.RpcMethodHandler:
        routing = self._routing
        upstream = routing.table.match(method)
        if upstream is None:
            return self._unrouted_handler(method)
        kind: CallKind = upstream.shapes.kind(method) or "stream_stream"
        lookup = routing.upstreams.get
        forward = self._forward
        # The breaker's name for the call info: fixed for an upstream and method (the name is
        # the upstream's, or upstream/method with per_method), so looked up once, here.
        breaker = upstream.guard.breaker_for(method).name

        if kind == "unary_unary":
            async def unary_unary(request: bytes, context: Context) -> bytes | None:
                return await forward(upstream, lookup, method, kind, request, context, breaker)
            return grpc.unary_unary_rpc_method_handler(unary_unary)
        if kind == "unary_stream":
            async def unary_stream(request: bytes, context: Context) -> None:
                await forward(upstream, lookup, method, kind, request, context, breaker)
            return grpc.unary_stream_rpc_method_handler(unary_stream)
        if kind == "stream_unary":
            async def stream_unary(requests: object, context: Context) -> bytes | None:
                return await forward(upstream, lookup, method, kind, None, context, breaker)
            return grpc.stream_unary_rpc_method_handler(stream_unary)

        async def stream_stream(requests: object, context: Context) -> None:
            await forward(upstream, lookup, method, "stream_stream", None, context, breaker)
        return grpc.stream_stream_rpc_method_handler(stream_stream)

    def _unrouted_handler(self, method: str) -> grpc.RpcMethodHandler:
        details = f"no route for method {method!r} in the sidecar config"
        observer = self._observer

        async def unrouted(requests: object, context: Context) -> None:
            if observer is not NOOP_OBSERVER:
                info = CallInfo("", method, "", "stream_stream", context.peer(), "",
                                tuple(context.invocation_metadata() or ()))
                with observer.start_call(info) as scope:
                    scope.finish(grpc.StatusCode.UNIMPLEMENTED, 0.0)
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, details)

        return grpc.stream_stream_rpc_method_handler(unrouted)

    # --- one call ------------------------------------------------------------------------------

    async def _forward(self, first: Upstream, lookup: Callable[[str], Upstream | None],
                       method: str, kind: CallKind, request: bytes | None,
                       context: Context, breaker: str) -> bytes | None:
        observer = self._observer
        incoming = context.invocation_metadata() or ()
        if observer is NOOP_OBSERVER:
            return await self._call(first, lookup, method, kind, request, context, incoming,
                                    NOOP_SCOPE)
        info = CallInfo(first.name, method, breaker, kind, context.peer(), first.address,
                        tuple(incoming))
        with observer.start_call(info) as scope:
            return await self._call(first, lookup, method, kind, request, context, incoming,
                                    scope)

    async def _call(self, first: Upstream, lookup: Callable[[str], Upstream | None],
                    method: str, kind: CallKind, request: bytes | None, context: Context,
                    incoming: Sequence[MetadataItem], scope: CallScope) -> bytes | None:
        started = perf_counter()
        decision = admit(first, method, scope, lookup)
        if isinstance(decision, Rejection):
            scope.finish(decision.code, perf_counter() - started)
            await context.abort(decision.code, decision.details, decision.trailing_metadata)
            return None  # not reached: abort raises
        upstream, admission = decision
        if upstream.budget is not None:
            policy = upstream.policy_for(method)
            if policy is not None:
                return await self._call_with_policy(upstream, admission, policy, first, method,
                                                    kind, request, context, incoming, scope,
                                                    started)
        endpoint = upstream.pick()
        if endpoint is None:
            admission.settle(None, 0.0)  # nothing was sent: the breaker counts nothing
            scope.finish(_UNAVAILABLE, perf_counter() - started)
            await context.abort(_UNAVAILABLE, no_endpoints_details(upstream),
                                ((MD_UPSTREAM, upstream.name),))
            return None  # not reached: abort raises
        if scope is not NOOP_SCOPE:
            scope.endpoint(endpoint.address)
        attempt = _Attempt(admission, upstream.balancer, endpoint)
        timeout = context.time_remaining()
        if timeout is None:
            timeout = upstream.timeout_s
        metadata = _outgoing_metadata(incoming)
        if scope is not NOOP_SCOPE:
            scope.outgoing_metadata(metadata)
        extra_trailers = () if upstream is first else _FALLBACK_UPSTREAM_MD
        multicallable = attempt.connection.multicallable(kind, method)
        if kind == "unary_unary" or kind == "stream_unary":
            return await self._unary_response(
                attempt, multicallable, kind, request, timeout, metadata, context,
                scope, started, extra_trailers)
        await self._stream_response(
            attempt, multicallable, kind, request, timeout, metadata, context,
            scope, started, extra_trailers)
        return None

    async def _call_with_policy(self, upstream: Upstream, admission: Admission,
                                policy: RetryPolicy | HedgingPolicy, first: Upstream,
                                method: str, kind: CallKind, request: bytes | None,
                                context: Context, incoming: Sequence[MetadataItem],
                                scope: CallScope, started: float) -> bytes | None:
        """A call under a retry or hedging policy: several attempts, one admission."""
        budget = upstream.budget
        assert budget is not None
        budget.deposit()
        remaining = context.time_remaining()
        metadata = _outgoing_metadata(incoming)
        if scope is not NOOP_SCOPE:
            scope.outgoing_metadata(metadata)
        plan = CallPlan(upstream, admission, method, kind, request, context, metadata, scope,
                        started, started + (upstream.timeout_s if remaining is None
                                            else remaining),
                        () if upstream is first else _FALLBACK_UPSTREAM_MD)
        if isinstance(policy, RetryPolicy):
            return await forward_retried(plan, policy)
        return await forward_hedged(plan, policy)

    async def _unary_response(self, attempt: _Attempt, multicallable: Any, kind: CallKind,
                              request: bytes | None,
                              timeout_s: float, metadata: list[MetadataItem], context: Context,
                              scope: CallScope, started: float,
                              extra_trailers: tuple[tuple[str, str], ...]) -> bytes | None:
        pump: asyncio.Task[None] | None = None
        if kind == "unary_unary":
            call = multicallable(request, timeout=timeout_s, metadata=metadata or None)
        else:
            call = multicallable(timeout=timeout_s, metadata=metadata or None)
            pump = asyncio.get_running_loop().create_task(pump_requests(context, call))
        try:
            response: bytes = await call
        except grpc.aio.AioRpcError as error:
            await self._fail(attempt, call, error, context, scope, started, extra_trailers)
            return None  # not reached
        except asyncio.CancelledError:
            call.cancel()
            self._caller_left(attempt, context, scope, started)
            raise
        except BaseException:
            call.cancel()
            attempt.settle(grpc.StatusCode.UNKNOWN, started, perf_counter())
            raise
        finally:
            if pump is not None and not pump.done():
                pump.cancel()
        answered = perf_counter()
        elapsed = answered - started
        attempt.settle(_OK, started, answered)
        attempt.connection.streak.count = 0
        initial = await call.initial_metadata()
        if initial:
            await context.send_initial_metadata(tuple(initial))
        trailing = await call.trailing_metadata()
        if trailing or extra_trailers:
            context.set_trailing_metadata((*trailing, *extra_trailers))
        scope.finish(_OK, elapsed)
        return response

    async def _stream_response(self, attempt: _Attempt, multicallable: Any,
                               kind: CallKind, request: bytes | None,
                               timeout_s: float, metadata: list[MetadataItem], context: Context,
                               scope: CallScope, started: float,
                               extra_trailers: tuple[tuple[str, str], ...]) -> None:
        pump: asyncio.Task[None] | None = None
        if kind == "unary_stream":
            call = multicallable(request, timeout=timeout_s, metadata=metadata or None)
        else:
            call = multicallable(timeout=timeout_s, metadata=metadata or None)
            pump = asyncio.get_running_loop().create_task(pump_requests(context, call))
        first_message_at: float | None = None
        headers_sent = False
        try:
            initial = await call.initial_metadata()
            if initial:
                await context.send_initial_metadata(tuple(initial))
            headers_sent = True
            while True:
                message = await call.read()
                if message is _EOF:
                    break
                if first_message_at is None:
                    first_message_at = perf_counter()
                await context.write(message)
        except grpc.aio.AioRpcError as error:
            await self._fail(attempt, call, error, context, scope, started,
                             extra_trailers, first_message_at, headers_sent)
            return  # not reached
        except asyncio.CancelledError:
            call.cancel()
            self._caller_left(attempt, context, scope, started, first_message_at)
            raise
        except BaseException:
            call.cancel()
            attempt.settle(grpc.StatusCode.UNKNOWN, started, first_message_at or perf_counter())
            raise
        finally:
            if pump is not None and not pump.done():
                pump.cancel()
        ended = perf_counter()
        attempt.settle(_OK, started, first_message_at or ended)
        attempt.connection.streak.count = 0
        trailing = await call.trailing_metadata()
        if trailing or extra_trailers:
            context.set_trailing_metadata((*trailing, *extra_trailers))
        scope.finish(_OK, ended - started)

    async def _fail(self, attempt: _Attempt, call: Any, error: grpc.aio.AioRpcError,
                    context: Context, scope: CallScope, started: float,
                    extra_trailers: tuple[tuple[str, str], ...],
                    first_message_at: float | None = None, headers_sent: bool = False) -> None:
        """The upstream call ended with a non-OK status: count it and answer it verbatim."""
        ended = perf_counter()
        code = error.code()
        attempt.settle(code, started, first_message_at or ended)
        if code is _DEADLINE_EXCEEDED and first_message_at is None:
            attempt.connection.timed_out(attempt.admission.permit.probe)
        else:  # an answer (or a stream's messages): the connection is alive
            attempt.connection.streak.count = 0
        scope.finish(code, ended - started)
        if not headers_sent:
            # From the call, not the error: the error may be made before the headers op
            # completed, while the call waits for it.
            initial = await call.initial_metadata()
            if initial:
                await context.send_initial_metadata(tuple(initial))
        trailing = error.trailing_metadata()
        await context.abort(code, error.details() or "",
                            (*(trailing or ()), *extra_trailers))

    def _caller_left(self, attempt: _Attempt, context: Context, scope: CallScope,
                     started: float, first_message_at: float | None = None) -> None:
        ended = perf_counter()
        code = _ended_by_caller(context)
        attempt.settle(code, started, first_message_at or ended)
        if code is _DEADLINE_EXCEEDED and first_message_at is None:
            attempt.connection.timed_out(attempt.admission.permit.probe)
        scope.finish(code or _CANCELLED, ended - started)
