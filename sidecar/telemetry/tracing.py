"""OpenTelemetry tracing: a span per proxied call, a span per breaker state change.

Call spans (:class:`TracingObserver`) follow the gRPC semantic conventions: kind CLIENT (the
sidecar calls the upstream on the host's behalf), name ``pkg.Service/Method``, attributes
``rpc.system``, ``rpc.service``, ``rpc.method``, ``rpc.grpc.status_code``, ``server.address`` /
``server.port`` (the upstream), ``client.address`` / ``client.port`` (the host app),
``sidecar.upstream`` and, for per-method breakers, ``sidecar.breaker``. The W3C
``traceparent``/``tracestate`` and ``baggage`` of the host's metadata are the parent; the call
span's context replaces them on the way to the upstream, so the sidecar sits inside the
application's own trace. A call the breaker rejected
carries a ``breaker.rejected`` event, a fallback a ``breaker.fallback`` event.

Breaker spans (:class:`TransitionTracer`): every state change is its own root span
``breaker.transition`` (and every mode change ``breaker.mode_change``), ALWAYS sampled whatever
the sampling of the call, with a link to the span of the call that caused it. An unsampled call
still has a valid span context (its ids travel to the upstream in ``traceparent``), so the link
is there for it too.

Endpoint spans (:mod:`sidecar.telemetry.endpoint_tracing`): an ejection, a return and a change
of an upstream's endpoint set are traced the same way, as ``endpoint.ejected``,
``endpoint.returned`` and ``endpoints.changed``.

Sampling and export (:class:`SidecarSampler`, :func:`setup_tracing`) are set up in
:mod:`sidecar.telemetry.tracing_setup`; their names are re-exported here.

Threading: everything here runs on the data path (the proxy's event loop, or a thread in
library mode). Nothing blocks: span processors only enqueue, the exporter runs in the batch
processor's own thread, and a full queue drops spans (counted by the SDK) instead of waiting.

Example::

    tracing = setup_tracing(config)                   # provider, sampler, exporter
    observer = TracingObserver(tracing.tracer)        # plug into the proxy (observers=...)
    listener = TransitionTracer(tracing.tracer)       # plug into every breaker
    ...
    tracing.shutdown()                                 # flushes queued spans
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Final

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Setter, TextMapPropagator
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.span import DEFAULT_TRACE_STATE
from opentelemetry.util.types import AttributeValue

from sidecar.breaker import BreakerListener, ModeChange, Transition
from sidecar.telemetry import attempt_tracing
from sidecar.telemetry._names import upstream_of
from sidecar.telemetry.call_spans import (
    SPAN_KEY,
    CallStatics,
    RootSpans,
    call_statics,
    split_host_port,
    traceparent,
)
from sidecar.telemetry.tracing_setup import (
    ALWAYS_SAMPLED_SPANS,
    DEFAULT_SHUTDOWN_TIMEOUT_S,
    ENDPOINT_EJECTED_SPAN,
    ENDPOINT_RETURNED_SPAN,
    ENDPOINTS_CHANGED_SPAN,
    MODE_CHANGE_SPAN,
    TRANSITION_SPAN,
    SidecarSampler,
    TracingSetup,
    setup_tracing,
)

if TYPE_CHECKING:
    from sidecar.protection import CallInfo

__all__ = [
    "DEFAULT_SHUTDOWN_TIMEOUT_S",
    "ENDPOINTS_CHANGED_SPAN",
    "ENDPOINT_EJECTED_SPAN",
    "ENDPOINT_RETURNED_SPAN",
    "MODE_CHANGE_SPAN",
    "TRANSITION_SPAN",
    "SidecarSampler",
    "TracingObserver",
    "TracingSetup",
    "TransitionTracer",
    "record_caused_span",
    "setup_tracing",
]


_ATTRIBUTE_CACHE_SIZE: Final = 1024
"""Distinct (method, upstream, address, peer) attribute sets cached; reset when full."""

_ROOT: Final = Context()
_CAUSED_BY: Final[Mapping[str, AttributeValue]] = {"sidecar.link": "caused_by"}


# --- call spans --------------------------------------------------------------------------------


class _MetadataSetter(Setter[list[tuple[str, str | bytes]]]):
    def set(self, carrier: list[tuple[str, str | bytes]], key: str, value: str) -> None:
        carrier.append((key, value))


_SETTER: Final = _MetadataSetter()


class _TracingScope:
    """One call's span: enter starts it and makes it current, exit ends it. Also the
    ``CallScope`` the proxy reports to (one object per call, no other allocation)."""

    __slots__ = ("_attempts", "_baggage", "_code", "_context", "_info", "_observer", "_token",
                 "span")

    def __init__(self, observer: TracingObserver, info: CallInfo) -> None:
        self._observer = observer
        self._info = info
        self._code: grpc.StatusCode | None = None
        self._baggage: str | None = None
        self._attempts: dict[int, Span] | None = None  # attempt spans not ended yet

    def __enter__(self) -> _TracingScope:
        observer, info = self._observer, self._info
        statics = observer._statics(info)
        parent = observer._extract(info.metadata, self)
        roots = observer._roots
        if parent is _ROOT and roots is not None and statics.by_ratio:
            span = roots.start(statics.name, statics.attributes)
            self._context = Context({SPAN_KEY: span})  # = set_span_in_context(span, _ROOT)
        else:
            span = observer._tracer.start_span(statics.name, context=parent,
                                               kind=SpanKind.CLIENT,
                                               attributes=statics.attributes)
            self._context = trace.set_span_in_context(span, parent)
        self.span = span
        self._token = otel_context.attach(self._context)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        span = self.span
        try:
            # After finish(), an exception is the proxy answering (grpc's abort raises): not an
            # error of the call beyond its status. Before it, something went wrong: record it.
            if exc is not None and self._code is None and span.is_recording():
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            if self._attempts:  # attempts the proxy did not report ended (it failed first)
                for attempt in self._attempts.values():
                    attempt_tracing.end_attempt(attempt, None, "failed")
            span.end()
        finally:
            otel_context.detach(self._token)

    def outgoing_metadata(self, metadata: list[tuple[str, str | bytes]]) -> None:
        """Replace the host's trace headers with the call span's context (and baggage)."""
        observer = self._observer
        fields = observer._fields
        if not fields:
            return
        if metadata and any(key in fields for key, _ in metadata):
            metadata[:] = [item for item in metadata if item[0] not in fields]
        if not observer._w3c:
            observer._propagator.inject(metadata, context=self._context, setter=_SETTER)
            return
        # The default propagators (tracecontext, baggage), written directly: same headers as
        # the SDK's propagators, at a fraction of the per-call cost.
        span_context = self.span.get_span_context()
        header = traceparent(span_context)
        if header is not None:
            metadata.append(("traceparent", header))
            state = span_context.trace_state
            if state is not DEFAULT_TRACE_STATE and state:
                metadata.append(("tracestate", state.to_header()))
        if self._baggage:  # passed on as the host sent it
            metadata.append(("baggage", self._baggage))

    def rejected(self, reason: str, retry_after_ms: int) -> None:
        if self.span.is_recording():
            self.span.add_event("breaker.rejected", {
                "breaker.reason": reason, "breaker.retry_after_ms": retry_after_ms,
            })

    def fallback(self, kind: str, target: str) -> None:
        if self.span.is_recording():
            self.span.add_event("breaker.fallback", {
                "fallback.kind": kind, "fallback.target": target,
            })

    def overflow(self) -> None:
        if self.span.is_recording():
            self.span.add_event("sidecar.overflow")

    def attempt_started(self, attempt: int, address: str, hedge: bool) -> None:
        if self.span.is_recording():
            if self._attempts is None:
                self._attempts = {}
            self._attempts[attempt] = attempt_tracing.start_attempt(
                self._observer._tracer, self._context, attempt, address, hedge)

    def attempt_ended(self, attempt: int, code: grpc.StatusCode | None,
                      duration_s: float, outcome: str) -> None:
        span = self._attempts.pop(attempt, None) if self._attempts else None
        if span is not None:
            attempt_tracing.end_attempt(span, code, outcome)

    def retry(self, reason: str, delay_s: float) -> None:
        if self.span.is_recording():
            attempt_tracing.retry_event(self.span, reason, delay_s)

    def retry_refused(self, reason: str) -> None:
        if self.span.is_recording():
            attempt_tracing.retry_refused_event(self.span, reason)

    def hedge(self, attempt: int) -> None:
        if self.span.is_recording():
            self.span.add_event("sidecar.hedge", {"sidecar.hedge.attempt": attempt})

    def shed(self, limit: int, in_flight: int) -> None:
        if self.span.is_recording():
            attempt_tracing.shed_event(self.span, limit, in_flight)

    def endpoint(self, address: str) -> None:
        """The chosen endpoint becomes the span's ``server.address`` / ``server.port``."""
        span = self.span
        if span.is_recording():
            host, port = split_host_port(address)
            span.set_attribute("server.address", host)
            if port is not None:
                span.set_attribute("server.port", port)

    def finish(self, code: grpc.StatusCode, duration_s: float) -> None:
        self._code = code
        span = self.span
        if span.is_recording():
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code is not grpc.StatusCode.OK:
                span.set_status(Status(StatusCode.ERROR, code.name))


def _default_propagators() -> bool:
    """True when ``OTEL_PROPAGATORS`` asks for the default W3C pair (or is unset)."""
    names = os.environ.get("OTEL_PROPAGATORS", "tracecontext,baggage")
    return [n.strip().lower() for n in names.split(",") if n.strip()] == [
        "tracecontext", "baggage"]


class TracingObserver:
    """A proxy ``CallObserver`` giving every proxied call a span (see the module docstring).

    Put it first among the observers so the others see the call's span as current.
    """

    def __init__(self, tracer: trace.Tracer, propagator: TextMapPropagator | None = None) -> None:
        self._tracer = tracer
        self._propagator = propagator or propagate.get_global_textmap()
        self._w3c = propagator is None and _default_propagators()
        # Empty with OTEL_PROPAGATORS=none: the host's headers then pass through untouched.
        self._fields = frozenset(self._propagator.fields)
        self._roots = RootSpans.for_tracer(tracer, SidecarSampler)
        """The cheap start of unsampled root call spans (None: the SDK starts every span)."""
        self._cache: dict[tuple[str, str, str, str, str], CallStatics] = {}
        self._cache_lock = threading.Lock()

    def start_call(self, info: CallInfo) -> _TracingScope:
        return _TracingScope(self, info)

    def _statics(self, info: CallInfo) -> CallStatics:
        key = (info.method, info.upstream, info.upstream_address, info.breaker, info.peer)
        statics = self._cache.get(key)
        if statics is None:
            statics = call_statics(info, ALWAYS_SAMPLED_SPANS)
            with self._cache_lock:
                if len(self._cache) >= _ATTRIBUTE_CACHE_SIZE:
                    self._cache.clear()
                self._cache[key] = statics
        return statics

    def _extract(self, metadata: Sequence[tuple[str, str | bytes]],
                 scope: _TracingScope) -> Context:
        fields = self._fields
        carrier = {key: value for key, value in metadata
                   if key in fields and isinstance(value, str)}
        if not carrier:
            return _ROOT
        scope._baggage = carrier.get("baggage")
        return self._propagator.extract(carrier, context=_ROOT)


# --- breaker spans -----------------------------------------------------------------------------


class TransitionTracer(BreakerListener):
    """Records each breaker state change as its own always-sampled root span, linked to the
    span of the call that caused it (the current span: listeners run synchronously inside
    the call). A change with no call behind it (admin, reload) has no link.

    The span is zero-length at the transition's wall-clock time. When the causing call is
    sampled, its span also gets a ``breaker.transition`` event. Never blocks.
    """

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def on_transition(self, transition: Transition) -> None:
        snapshot = transition.snapshot
        attributes: dict[str, AttributeValue] = {
            "sidecar.upstream": upstream_of(transition.breaker),
            "sidecar.breaker": transition.breaker,
            "breaker.from_state": transition.from_state.value,
            "breaker.to_state": transition.to_state.value,
            "breaker.reason": transition.reason,
            "breaker.failure_rate": snapshot.failure_rate,
            "breaker.slow_call_rate": snapshot.slow_call_rate,
            "breaker.calls_in_window": snapshot.calls,
            "breaker.failures_in_window": snapshot.failures,
            "breaker.slow_calls_in_window": snapshot.slow_calls,
            "breaker.consecutive_failures": snapshot.consecutive_failures,
            "breaker.open_duration_s": transition.open_duration_s,
            "breaker.trip_streak": transition.trip_streak,
            "breaker.mode": transition.mode.value,
        }
        self._record(TRANSITION_SPAN, attributes, transition.at_wall)

    def on_mode_change(self, change: ModeChange) -> None:
        self._record(MODE_CHANGE_SPAN, {
            "sidecar.upstream": upstream_of(change.breaker),
            "sidecar.breaker": change.breaker,
            "breaker.from_mode": change.from_mode.value,
            "breaker.to_mode": change.to_mode.value,
            "breaker.mode_source": change.source,
        }, change.at_wall)

    def _record(self, name: str, attributes: dict[str, AttributeValue], at_wall: float) -> None:
        record_caused_span(self._tracer, name, attributes, at_wall)


def record_caused_span(tracer: trace.Tracer, name: str, attributes: Mapping[str, AttributeValue],
                       at_wall: float) -> None:
    """One zero-length root span ``name`` at ``at_wall`` (unix seconds), linked (``sidecar.link:
    caused_by``) to the current span when there is a valid one; a recording current span also
    gets an event ``name`` with the same attributes. How breaker and endpoint changes are traced
    (their names are in the sampler's always-sampled set). Never blocks."""
    current = trace.get_current_span()
    caused_by = current.get_span_context()
    links = [Link(caused_by, _CAUSED_BY)] if caused_by.is_valid else []
    whole = int(at_wall)  # split so float rounding at 1e18 ns does not shift the time
    at_ns = whole * 1_000_000_000 + round((at_wall - whole) * 1e9)
    span = tracer.start_span(name, context=_ROOT, kind=SpanKind.INTERNAL,
                             attributes=attributes, links=links, start_time=at_ns)
    span.end(end_time=at_ns)
    if current.is_recording():
        current.add_event(name, attributes)


