"""Setting tracing up: the tracer provider, its sampler and its exporter, from the config and
the standard ``OTEL_*`` variables (docs/observability.md). Kept apart from the per-call
tracing in :mod:`sidecar.telemetry.tracing`, which only needs the names and the sampler.

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

Threading: :func:`setup_tracing` runs once at start; :meth:`SidecarSampler.set_ratio` may run
on reload while calls sample on other threads (one reference assignment).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from opentelemetry import trace
from opentelemetry.context import Context
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
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from sidecar import __version__
from sidecar.telemetry.call_spans import CallIds

if TYPE_CHECKING:
    from sidecar.config import SidecarConfig, TracingConfig

__all__ = [
    "ALWAYS_SAMPLED_SPANS",
    "DEFAULT_SHUTDOWN_TIMEOUT_S",
    "ENDPOINTS_CHANGED_SPAN",
    "ENDPOINT_EJECTED_SPAN",
    "ENDPOINT_RETURNED_SPAN",
    "MODE_CHANGE_SPAN",
    "TRACER_NAME",
    "TRANSITION_SPAN",
    "SidecarSampler",
    "TracingSetup",
    "build_resource",
    "setup_tracing",
]

_log = logging.getLogger("sidecar.telemetry.tracing")

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
