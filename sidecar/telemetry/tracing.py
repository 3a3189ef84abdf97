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

Sampling (:class:`SidecarSampler`): ``ParentBased(TraceIdRatioBased(sample_ratio))`` for calls,
always-on for breaker and endpoint spans; the ratio can change on reload.

Export (:func:`setup_tracing`): OTLP/gRPC (the SDK's exporter with a cheaper encoder,
:mod:`sidecar.telemetry._otlp`) through a ``BatchSpanProcessor`` when
``tracing.otlp_endpoint`` is set (or ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` when it is not);
otherwise spans stay in-process (ids still flow to logs, exemplars and the upstream). The
standard ``OTEL_*`` variables are honoured: ``OTEL_SDK_DISABLED``, ``OTEL_TRACES_EXPORTER=none``,
``OTEL_TRACES_SAMPLER[_ARG]`` (only when the file has no ``sample_ratio``),
``OTEL_EXPORTER_OTLP_*`` (headers, timeout, compression, TLS), ``OTEL_BSP_*`` (queue, batch,
delay), ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` (which win over the defaults
``service.name={service}-sidecar``, ``service.instance.id={instance}``,
``service.version={sidecar version}``). ``OTEL_PROPAGATORS`` picks the propagators
(default ``tracecontext,baggage``).

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

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Final

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Setter, TextMapPropagator
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.span import DEFAULT_TRACE_STATE, TraceState
from opentelemetry.util.types import Attributes, AttributeValue

from sidecar import __version__
from sidecar.breaker import BreakerListener, ModeChange, Transition
from sidecar.telemetry import attempt_tracing
from sidecar.telemetry._names import upstream_of
from sidecar.telemetry.call_spans import (
    SPAN_KEY,
    CallIds,
    CallStatics,
    RootSpans,
    call_statics,
    split_host_port,
    traceparent,
)

if TYPE_CHECKING:
    from sidecar.config import SidecarConfig, TracingConfig
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

_log = logging.getLogger(__name__)

TRACER_NAME: Final = "sidecar"
TRANSITION_SPAN: Final = "breaker.transition"
MODE_CHANGE_SPAN: Final = "breaker.mode_change"
ENDPOINT_EJECTED_SPAN: Final = "endpoint.ejected"
ENDPOINT_RETURNED_SPAN: Final = "endpoint.returned"
ENDPOINTS_CHANGED_SPAN: Final = "endpoints.changed"
"""Span names of the balancer's records (:mod:`sidecar.telemetry.endpoint_tracing`)."""
ALWAYS_SAMPLED_SPANS: Final = frozenset({
    TRANSITION_SPAN, MODE_CHANGE_SPAN,
    ENDPOINT_EJECTED_SPAN, ENDPOINT_RETURNED_SPAN, ENDPOINTS_CHANGED_SPAN,
})

DEFAULT_SHUTDOWN_TIMEOUT_S: Final = 5.0
"""How long shutdown waits for queued spans to reach the collector."""

_ATTRIBUTE_CACHE_SIZE: Final = 1024
"""Distinct (method, upstream, address, peer) attribute sets cached; reset when full."""

_ROOT: Final = Context()
_CAUSED_BY: Final[Mapping[str, AttributeValue]] = {"sidecar.link": "caused_by"}


# --- sampling ----------------------------------------------------------------------------------


class SidecarSampler(Sampler):
    """``ParentBased(TraceIdRatioBased(ratio))`` for calls; breaker spans are always sampled.

    ``set_ratio`` swaps the call sampler atomically (one reference assignment), so a reload can
    change the ratio while calls run on other threads.
    """

    def __init__(self, ratio: float) -> None:
        self._calls: Sampler = ALWAYS_ON
        self.ratio = 1.0
        self.set_ratio(ratio)

    def set_ratio(self, ratio: float) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"tracing.sample_ratio: must be >= 0 and <= 1, got {ratio!r}")
        calls = TraceIdRatioBased(ratio)
        self.bound = calls.bound  # for call_spans.RootSpans; set first: a racing call may
        self._calls = ParentBased(calls)  # sample on the old ratio or the new, never a mix
        self.ratio = ratio

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        sampler = ALWAYS_ON if name in ALWAYS_SAMPLED_SPANS else self._calls
        return sampler.should_sample(parent_context, trace_id, name, kind, attributes, links,
                                     trace_state)

    def get_description(self) -> str:
        return f"SidecarSampler{{calls:ParentBased(TraceIdRatioBased{{{self.ratio}}})," \
               f"breaker:AlwaysOn}}"


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


# --- set-up ------------------------------------------------------------------------------------

_SAMPLER_RATIOS: Final[Mapping[str, float | None]] = {
    # OTEL_TRACES_SAMPLER values; None = take OTEL_TRACES_SAMPLER_ARG. All are parent-based here.
    "always_on": 1.0, "always_off": 0.0, "parentbased_always_on": 1.0,
    "parentbased_always_off": 0.0, "traceidratio": None, "parentbased_traceidratio": None,
}


def _sample_ratio(config: TracingConfig, environ: Mapping[str, str]) -> float:
    """The file's ``sample_ratio`` when set there, else ``OTEL_TRACES_SAMPLER[_ARG]``, else
    the config default."""
    if "sample_ratio" in config.model_fields_set:
        return config.sample_ratio
    name = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if name not in _SAMPLER_RATIOS:
        if name:
            _log.warning("OTEL_TRACES_SAMPLER=%s is not supported; using sample_ratio %s",
                         name, config.sample_ratio)
        return config.sample_ratio
    fixed = _SAMPLER_RATIOS[name]
    if fixed is not None:
        return fixed
    raw = environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0")
    try:
        ratio = float(raw)
    except ValueError:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG: must be a number, got {raw!r}") from None
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG: must be >= 0 and <= 1, got {raw!r}")
    return ratio


def _exporter_endpoint(config: TracingConfig, environ: Mapping[str, str]) -> str | None:
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None
    if config.otlp_endpoint:
        return config.otlp_endpoint
    return (environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None)


def build_resource(config: SidecarConfig) -> Resource:
    """``service.name={service}-sidecar``, ``service.instance.id``, ``service.version``, the
    host service name; ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` override."""
    ours = Resource.create({
        "service.name": f"{config.service}-sidecar",
        "service.instance.id": config.instance,
        "service.version": __version__,
        "sidecar.host_service": config.service,
    })
    return ours.merge(OTELResourceDetector().detect())


@dataclass(slots=True)
class TracingSetup:
    """The tracer provider and what was decided about it. ``exporting`` is False when spans
    stay in-process. Call :meth:`shutdown` once, at exit."""

    provider: TracerProvider
    sampler: SidecarSampler
    tracer: trace.Tracer
    endpoint: str | None
    exporting: bool

    def apply(self, config: TracingConfig) -> None:
        """Apply a reloaded tracing section: the ratio changes now; an endpoint change needs a
        restart (logged)."""
        self.sampler.set_ratio(_sample_ratio(config, os.environ))
        wanted = _exporter_endpoint(config, os.environ)
        if wanted != self.endpoint:
            _log.warning("tracing.otlp_endpoint changed (%s -> %s): takes effect after a restart",
                         self.endpoint, wanted, extra={"event": "reload"})

    def shutdown(self, timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S) -> None:
        """Flush queued spans (waits up to ``timeout_s``) and stop the exporter."""
        self.provider.force_flush(int(timeout_s * 1000))
        self.provider.shutdown()


def setup_tracing(config: SidecarConfig, *, exporter: SpanExporter | None = None,
                  environ: Mapping[str, str] | None = None) -> TracingSetup:
    """Build the tracer provider for ``config``; ``exporter`` overrides the OTLP one (tests,
    benchmarks). Does not touch the global tracer provider."""
    env = os.environ if environ is None else environ
    sampler = SidecarSampler(_sample_ratio(config.tracing, env))
    provider = TracerProvider(resource=build_resource(config), sampler=sampler,
                              id_generator=CallIds())
    endpoint = _exporter_endpoint(config.tracing, env)
    if exporter is None and endpoint is not None:
        from sidecar.telemetry._otlp import FastOTLPSpanExporter

        exporter = FastOTLPSpanExporter(endpoint=endpoint)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return TracingSetup(
        provider=provider,
        sampler=sampler,
        tracer=provider.get_tracer(TRACER_NAME, __version__),
        endpoint=endpoint,
        exporting=exporter is not None,
    )
