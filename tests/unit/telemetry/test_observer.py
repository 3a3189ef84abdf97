"""The combined telemetry observer: tracing and metrics see the same call, in order."""

from __future__ import annotations

import logging

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from sidecar.telemetry.metrics import MetricsObserver, SidecarMetrics
from sidecar.telemetry.observer import TelemetryObserver
from sidecar.telemetry.tracing import SidecarSampler, TracingObserver
from tests.unit.telemetry.builders import call_info


@pytest.fixture
def parts() -> tuple[TelemetryObserver, InMemorySpanExporter, CollectorRegistry]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=SidecarSampler(1.0))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    registry = CollectorRegistry()
    observer = TelemetryObserver(TracingObserver(provider.get_tracer("t")),
                                 MetricsObserver(SidecarMetrics(registry)))
    return observer, exporter, registry


def test_one_call_gives_one_span_one_count_and_an_exemplar_of_that_span(
        parts: tuple[TelemetryObserver, InMemorySpanExporter, CollectorRegistry]) -> None:
    observer, exporter, registry = parts
    outgoing: list[tuple[str, str | bytes]] = []
    with observer.start_call(call_info()) as scope:
        scope.outgoing_metadata(outgoing)
        scope.rejected("open", 100)
        scope.fallback("upstream", "backup")
        scope.finish(grpc.StatusCode.OK, 0.002)

    (span,) = exporter.get_finished_spans()
    assert [e.name for e in span.events] == ["breaker.rejected", "breaker.fallback"]
    assert [k for k, _ in outgoing] == ["traceparent"]
    labels = {"upstream": "payments"}
    assert registry.get_sample_value("sidecar_breaker_rejections_total", labels) == 1
    assert registry.get_sample_value("sidecar_fallbacks_total", labels) == 1
    exemplars = [s.exemplar for f in registry.collect() for s in f.samples if s.exemplar]
    assert [e.labels["trace_id"] for e in exemplars] == [format(span.context.trace_id, "032x")]


def test_a_failing_tracing_part_never_fails_the_call_and_metrics_still_count(
        parts: tuple[TelemetryObserver, InMemorySpanExporter, CollectorRegistry],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    observer, exporter, registry = parts

    def broken(self: object, info: object) -> None:
        raise RuntimeError("tracing bug")

    monkeypatch.setattr(TracingObserver, "_statics", broken)
    with caplog.at_level(logging.ERROR), observer.start_call(call_info()) as scope:
        scope.outgoing_metadata([])
        scope.finish(grpc.StatusCode.OK, 0.001)

    assert exporter.get_finished_spans() == ()
    assert registry.get_sample_value("sidecar_requests_total", {
        "upstream": "payments", "method": "/payments.v1.Payments/Charge", "code": "OK"}) == 1
    assert "tracing failed to start a call span" in caplog.text
