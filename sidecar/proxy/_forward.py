"""The data path: a generic gRPC handler that forwards any method as raw bytes.

Every call the host app sends to ``listen`` is routed by method path (longest route prefix wins)
to an upstream, admitted by that upstream's guard (breaker, then concurrency limit; see
:mod:`sidecar.proxy.guard` for how outcomes are classified), and forwarded on the upstream's one
long-lived channel. Messages are never decoded: request and response serializers are identity.

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
import math
import time
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import Any, Final, TypeAlias

import grpc

from sidecar.proxy._routing import RouteTable
from sidecar.proxy._shapes import ShapeBook
from sidecar.proxy.guard import MD_FALLBACK, Admission, Rejection, UpstreamGuard, admit
from sidecar.proxy.hooks import (
    NOOP_OBSERVER,
    NOOP_SCOPE,
    CallInfo,
    CallKind,
    CallObserver,
    CallScope,
    MetadataItem,
)

_log = logging.getLogger("sidecar.proxy")

HOP_BY_HOP: Final = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "transfer-encoding", "upgrade", "host", "user-agent", "content-type",
    "content-length",
})
"""Request headers that describe one hop, never forwarded."""
_KEPT_GRPC_KEYS: Final = frozenset({"grpc-trace-bin", "grpc-tags-bin"})

MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
"""Largest message the proxy accepts and sends either way (grpc's default of 4 MiB would make
the proxy refuse calls the endpoints accept)."""
MAX_CACHED_HANDLERS: Final = 4096
"""Distinct method paths whose handler is remembered (bounded: paths come from callers)."""

CHANNEL_OPTIONS: Final = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)
STALE_AFTER_TIMEOUTS: Final = 3
"""Calls in a row on one upstream connection that ended DEADLINE_EXCEEDED (no answer of any
kind in between) after which the proxy opens a new connection to that upstream. A timed-out
HALF_OPEN probe is enough on its own."""
RECONNECT_MIN_INTERVAL_S: Final = 1.0
"""At most one new connection per upstream this often (a hung upstream times out every call:
this bounds the churn to one connect a second, and the breaker's probes make it rarer)."""
STALE_CHANNEL_GRACE_S: Final = 300.0
"""Calls still running on a replaced connection may finish (their deadlines end them) for at
most this long; then they are cancelled and the old connection is closed."""

_EOF: Final = grpc.aio.EOF
_OK: Final = grpc.StatusCode.OK
_CANCELLED: Final = grpc.StatusCode.CANCELLED
_DEADLINE_EXCEEDED: Final = grpc.StatusCode.DEADLINE_EXCEEDED
_FALLBACK_UPSTREAM_MD: Final = ((MD_FALLBACK, "upstream"),)

Context: TypeAlias = Any  # grpc.aio.ServicerContext; grpc ships no type hints
ChannelOption: TypeAlias = tuple[str, int]


def upstream_channel_options(keepalive_ms: int | None,
                             keepalive_timeout_ms: int) -> tuple[ChannelOption, ...]:
    """The options of an upstream's channel.

    - A local subchannel pool: every channel (and so every replacement after
      :data:`STALE_AFTER_TIMEOUTS`) has its own TCP connection. With grpc's global pool a new
      channel to the same address would reuse the old, possibly dead, connection.
    - ``keepalive_ms`` (None: off): HTTP/2 pings after that long without reading anything,
      only while calls are in flight (``keepalive_permit_without_calls`` 0), the connection
      dropped when one goes unanswered for ``keepalive_timeout_ms``. This is what ends calls
      (long streams especially) waiting on a connection a partition swallowed.
      ``grpc.http2.ping_timeout_ms`` is set to the same timeout: measured with grpc 1.85, an
      unanswered ping (keepalive or flow-control) drops the connection only after that
      setting (default 60 s), whatever ``grpc.keepalive_timeout_ms`` says.
    """
    options: list[ChannelOption] = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
    if keepalive_ms is not None:
        options += [
            ("grpc.keepalive_time_ms", keepalive_ms),
            ("grpc.keepalive_timeout_ms", keepalive_timeout_ms),
            ("grpc.http2.ping_timeout_ms", keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", 0),
        ]
    return tuple(options)


class Connection:
    """One channel (one TCP connection) of an :class:`Upstream`, and what its calls showed.

    The data path reports each upstream outcome: any answer sets ``timeouts_in_a_row`` to 0
    (an attribute store), a timeout calls :meth:`timed_out`. Runs on the proxy's loop only.
    """

    __slots__ = ("_callables", "channel", "owner", "timeouts_in_a_row")

    def __init__(self, owner: Upstream, channel: grpc.aio.Channel) -> None:
        self.owner = owner
        self.channel = channel
        self.timeouts_in_a_row = 0
        self._callables: dict[tuple[str, str], Any] = {}

    def multicallable(self, kind: CallKind, method: str) -> Any:
        """The channel's raw-bytes multicallable for ``method`` forwarded as ``kind``."""
        key = (kind, method)
        found = self._callables.get(key)
        if found is None:
            if len(self._callables) >= MAX_CACHED_HANDLERS:
                self._callables.clear()
            factory = getattr(self.channel, kind)
            found = factory(method)
            self._callables[key] = found
        return found

    def timed_out(self, probe: bool) -> None:
        """A call on this connection got no answer in time; ``probe``: it was a HALF_OPEN
        probe. Enough of them in a row, or one probe, and the upstream opens a new one."""
        self.timeouts_in_a_row += 1
        if probe or self.timeouts_in_a_row >= STALE_AFTER_TIMEOUTS:
            self.owner.replace_stale(self)


class Upstream:
    """One upstream at runtime: its connection, guard, known method shapes and call settings.

    A reload that keeps the upstream's address and breaker layout keeps this object (and so the
    breaker state and in-flight count) and only calls :meth:`reconfigure`.

    Dead connections: a partition, or a NAT entry dropped while idle, can swallow a connection
    without a FIN or RST; grpc keeps sending calls into it until the kernel gives up (~15 min).
    Two things end that: keepalive pings (see :func:`upstream_channel_options`), and
    :meth:`replace_stale`, which opens a new connection after :data:`STALE_AFTER_TIMEOUTS`
    timeouts in a row (or a timed-out probe), whatever the upstream's ping policy. Calls already
    on the old connection keep it until they end (at most :data:`STALE_CHANNEL_GRACE_S`).

    Threading: the proxy's event loop only (channels are created and closed on it).
    """

    __slots__ = ("_clock", "_draining", "_options", "_replaced_at", "address", "connection",
                 "guard", "name", "reconnects", "shapes", "timeout_s")

    def __init__(self, name: str, address: str, timeout_s: float, guard: UpstreamGuard,
                 on_shapes_learned: Callable[[], None],
                 options: tuple[ChannelOption, ...] | None = None,
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.address = address
        self.timeout_s = timeout_s
        self.guard = guard
        self._options = upstream_channel_options(None, 0) if options is None else options
        self._clock = clock
        self._replaced_at = -math.inf
        self._draining: dict[asyncio.Task[None], grpc.aio.Channel] = {}
        self.reconnects = 0
        """Connections replaced because they looked dead (since start)."""
        self.connection = Connection(self, self._open())
        self.shapes = ShapeBook(name, self.connection.channel, on_shapes_learned)

    @property
    def channel(self) -> grpc.aio.Channel:
        """The channel new calls use."""
        return self.connection.channel

    def multicallable(self, kind: CallKind, method: str) -> Any:
        """The current connection's raw-bytes multicallable for ``method`` as ``kind``."""
        return self.connection.multicallable(kind, method)

    def _open(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.address, options=self._options)

    def reconfigure(self, timeout_s: float, options: tuple[ChannelOption, ...]) -> None:
        """Apply reloaded settings; changed channel options take a new connection."""
        self.timeout_s = timeout_s
        if options != self._options:
            self._options = options
            self._replace("channel settings changed")

    def replace_stale(self, connection: Connection) -> None:
        """Open a new connection if ``connection`` is still the current one and the last
        replacement is at least :data:`RECONNECT_MIN_INTERVAL_S` ago."""
        if connection is not self.connection:
            return  # a call on an already replaced connection
        now = self._clock()
        if now - self._replaced_at < RECONNECT_MIN_INTERVAL_S:
            return
        self._replaced_at = now
        self.reconnects += 1
        self._replace(f"{connection.timeouts_in_a_row} calls in a row got no answer in time")

    def _replace(self, why: str) -> None:
        stale = self.connection
        self.connection = Connection(self, self._open())
        self.shapes.use_channel(self.connection.channel)
        _log.info("upstream %s: %s; opening a new connection to %s", self.name, why,
                  self.address, extra={"event": "reconnect", "upstream": self.name,
                                       "address": self.address})
        task = asyncio.get_running_loop().create_task(
            stale.channel.close(STALE_CHANNEL_GRACE_S))
        self._draining[task] = stale.channel
        task.add_done_callback(self._drained)

    def _drained(self, task: asyncio.Task[None]) -> None:
        self._draining.pop(task, None)

    async def close(self, grace_s: float | None) -> None:
        """Close the connection (and replaced ones still draining): calls in flight get
        ``grace_s`` (None: cancelled at once)."""
        self.shapes.close()
        channels = [self.connection.channel]
        for task, channel in list(self._draining.items()):
            task.cancel()
            channels.append(channel)
        await asyncio.gather(*(channel.close(grace_s) for channel in channels))


class Routing:
    """An immutable routing generation: upstreams by name and the route table over them."""

    __slots__ = ("table", "upstreams")

    def __init__(self, upstreams: dict[str, Upstream], routes: dict[str, Upstream]) -> None:
        self.upstreams = upstreams
        self.table: RouteTable[Upstream] = RouteTable(routes)


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

        if kind == "unary_unary":
            async def unary_unary(request: bytes, context: Context) -> bytes | None:
                return await forward(upstream, lookup, method, kind, request, context)
            return grpc.unary_unary_rpc_method_handler(unary_unary)
        if kind == "unary_stream":
            async def unary_stream(request: bytes, context: Context) -> None:
                await forward(upstream, lookup, method, kind, request, context)
            return grpc.unary_stream_rpc_method_handler(unary_stream)
        if kind == "stream_unary":
            async def stream_unary(requests: object, context: Context) -> bytes | None:
                return await forward(upstream, lookup, method, kind, None, context)
            return grpc.stream_unary_rpc_method_handler(stream_unary)

        async def stream_stream(requests: object, context: Context) -> None:
            await forward(upstream, lookup, method, "stream_stream", None, context)
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
                       context: Context) -> bytes | None:
        observer = self._observer
        incoming = context.invocation_metadata() or ()
        if observer is NOOP_OBSERVER:
            return await self._call(first, lookup, method, kind, request, context, incoming,
                                    NOOP_SCOPE)
        info = CallInfo(first.name, method, first.guard.breaker_for(method).name, kind,
                        context.peer(), first.address, tuple(incoming))
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
        timeout = context.time_remaining()
        if timeout is None:
            timeout = upstream.timeout_s
        metadata = _outgoing_metadata(incoming)
        if scope is not NOOP_SCOPE:
            scope.outgoing_metadata(metadata)
        extra_trailers = () if upstream is first else _FALLBACK_UPSTREAM_MD
        connection = upstream.connection
        multicallable = connection.multicallable(kind, method)
        if kind == "unary_unary" or kind == "stream_unary":
            return await self._unary_response(
                connection, multicallable, kind, request, timeout, metadata, context, admission,
                scope, started, extra_trailers)
        await self._stream_response(
            connection, multicallable, kind, request, timeout, metadata, context, admission,
            scope, started, extra_trailers)
        return None

    async def _unary_response(self, connection: Connection, multicallable: Any, kind: CallKind,
                              request: bytes | None,
                              timeout_s: float, metadata: list[MetadataItem], context: Context,
                              admission: Admission, scope: CallScope, started: float,
                              extra_trailers: tuple[tuple[str, str], ...]) -> bytes | None:
        pump: asyncio.Task[None] | None = None
        if kind == "unary_unary":
            call = multicallable(request, timeout=timeout_s, metadata=metadata or None)
        else:
            call = multicallable(timeout=timeout_s, metadata=metadata or None)
            pump = asyncio.get_running_loop().create_task(_pump_requests(context, call))
        try:
            response: bytes = await call
        except grpc.aio.AioRpcError as error:
            await self._fail(connection, call, error, context, admission, scope, started,
                             extra_trailers)
            return None  # not reached
        except asyncio.CancelledError:
            call.cancel()
            self._caller_left(connection, context, admission, scope, started)
            raise
        except BaseException:
            call.cancel()
            admission.settle(grpc.StatusCode.UNKNOWN, perf_counter() - started)
            raise
        finally:
            if pump is not None and not pump.done():
                pump.cancel()
        elapsed = perf_counter() - started
        admission.settle(_OK, elapsed)
        connection.timeouts_in_a_row = 0
        initial = await call.initial_metadata()
        if initial:
            await context.send_initial_metadata(tuple(initial))
        trailing = await call.trailing_metadata()
        if trailing or extra_trailers:
            context.set_trailing_metadata((*trailing, *extra_trailers))
        scope.finish(_OK, elapsed)
        return response

    async def _stream_response(self, connection: Connection, multicallable: Any,
                               kind: CallKind, request: bytes | None,
                               timeout_s: float, metadata: list[MetadataItem], context: Context,
                               admission: Admission, scope: CallScope, started: float,
                               extra_trailers: tuple[tuple[str, str], ...]) -> None:
        pump: asyncio.Task[None] | None = None
        if kind == "unary_stream":
            call = multicallable(request, timeout=timeout_s, metadata=metadata or None)
        else:
            call = multicallable(timeout=timeout_s, metadata=metadata or None)
            pump = asyncio.get_running_loop().create_task(_pump_requests(context, call))
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
            await self._fail(connection, call, error, context, admission, scope, started,
                             extra_trailers, first_message_at, headers_sent)
            return  # not reached
        except asyncio.CancelledError:
            call.cancel()
            self._caller_left(connection, context, admission, scope, started, first_message_at)
            raise
        except BaseException:
            call.cancel()
            admission.settle(grpc.StatusCode.UNKNOWN,
                             (first_message_at or perf_counter()) - started)
            raise
        finally:
            if pump is not None and not pump.done():
                pump.cancel()
        ended = perf_counter()
        admission.settle(_OK, (first_message_at or ended) - started)
        connection.timeouts_in_a_row = 0
        trailing = await call.trailing_metadata()
        if trailing or extra_trailers:
            context.set_trailing_metadata((*trailing, *extra_trailers))
        scope.finish(_OK, ended - started)

    async def _fail(self, connection: Connection, call: Any, error: grpc.aio.AioRpcError,
                    context: Context,
                    admission: Admission,
                    scope: CallScope, started: float,
                    extra_trailers: tuple[tuple[str, str], ...],
                    first_message_at: float | None = None, headers_sent: bool = False) -> None:
        """The upstream call ended with a non-OK status: count it and answer it verbatim."""
        ended = perf_counter()
        code = error.code()
        admission.settle(code, (first_message_at or ended) - started)
        if code is _DEADLINE_EXCEEDED and first_message_at is None:
            connection.timed_out(admission.permit.probe)
        else:  # an answer (or a stream's messages): the connection is alive
            connection.timeouts_in_a_row = 0
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

    def _caller_left(self, connection: Connection, context: Context, admission: Admission,
                     scope: CallScope, started: float,
                     first_message_at: float | None = None) -> None:
        ended = perf_counter()
        code = _ended_by_caller(context)
        admission.settle(code, (first_message_at or ended) - started)
        if code is _DEADLINE_EXCEEDED and first_message_at is None:
            connection.timed_out(admission.permit.probe)
        scope.finish(code or _CANCELLED, ended - started)


async def _pump_requests(context: Context, call: Any) -> None:
    """Copy the caller's request stream to the upstream call, then half-close it.

    Stops quietly when either call has ended: the upstream's (its status tells the caller
    why) or the caller's (the handler answered, e.g. aborted with the upstream's error).
    """
    try:
        while True:
            message = await context.read()
            if message is _EOF:
                await call.done_writing()
                return
            await call.write(message)
    except (grpc.aio.AioRpcError, grpc.aio.BaseError, asyncio.InvalidStateError):
        return
    except asyncio.CancelledError:
        raise
    except Exception:
        _log.exception("request pump failed; cancelling the upstream call")
        call.cancel()
