"""Prometheus instruments, the per-call observer, the breaker collector and the HTTP server,
each against a fresh registry."""

from __future__ import annotations

import urllib.request

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families

from sidecar.breaker import BreakerView, State
from sidecar.telemetry.metrics import (
    DEFAULT_DURATION_BUCKETS_S,
    BreakerCollector,
    MetricsBreakerListener,
    MetricsObserver,
    MetricsServer,
    SidecarMetrics,
)
from tests.unit.telemetry.builders import call_info, transition, view

CHARGE = "/payments.v1.Payments/Charge"


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> SidecarMetrics:
    return SidecarMetrics(registry)


def _call(observer: MetricsObserver, code: grpc.StatusCode, duration_s: float = 0.002,
          upstream: str = "payments", method: str = CHARGE) -> None:
    with observer.start_call(call_info(upstream=upstream, method=method)) as scope:
        scope.finish(code, duration_s)


def test_each_finished_call_is_counted_by_upstream_method_and_status_name(
        registry: CollectorRegistry, metrics: SidecarMetrics) -> None:
    observer = MetricsObserver(metrics)
    _call(observer, grpc.StatusCode.OK)
    _call(observer, grpc.StatusCode.OK)
    _call(observer, grpc.StatusCode.UNAVAILABLE)

    def requests(code: str) -> float | None:
        return registry.get_sample_value(
            "sidecar_requests_total", {"upstream": "payments", "method": CHARGE, "code": code})

    assert requests("OK") == 2
    assert requests("UNAVAILABLE") == 1


def test_call_durations_land_in_sub_millisecond_to_seconds_buckets(
        registry: CollectorRegistry, metrics: SidecarMetrics) -> None:
    observer = MetricsObserver(metrics)
    _call(observer, grpc.StatusCode.OK, duration_s=0.0002)
    _call(observer, grpc.StatusCode.OK, duration_s=3.0)
    labels = {"upstream": "payments", "method": CHARGE}

    def bucket(le: str) -> float | None:
        return registry.get_sample_value("sidecar_request_duration_seconds_bucket",
                                         {**labels, "le": le})

    assert DEFAULT_DURATION_BUCKETS_S[0] == 0.0001 and DEFAULT_DURATION_BUCKETS_S[-1] == 10.0
    assert bucket("0.0001") == 0
    assert bucket("0.00025") == 1
    assert bucket("2.5") == 1
    assert bucket("5.0") == 2
    assert registry.get_sample_value("sidecar_request_duration_seconds_count", labels) == 2


def test_unrouted_calls_share_one_label_value_whatever_their_method(
        registry: CollectorRegistry, metrics: SidecarMetrics) -> None:
    observer = MetricsObserver(metrics)
    for i in range(5):
        _call(observer, grpc.StatusCode.UNIMPLEMENTED, upstream="", method=f"/x.Y/M{i}")

    assert registry.get_sample_value("sidecar_requests_total", {
        "upstream": "_unrouted_", "method": "_unrouted_", "code": "UNIMPLEMENTED"}) == 5


def test_methods_beyond_the_per_upstream_cap_are_counted_as_other(
        registry: CollectorRegistry, metrics: SidecarMetrics) -> None:
    observer = MetricsObserver(metrics, max_methods_per_upstream=2)
    for name in ("A", "B", "C", "D", "A"):
        _call(observer, grpc.StatusCode.OK, method=f"/payments.v1.Payments/{name}")

    def requests(method: str) -> float | None:
        return registry.get_sample_value(
            "sidecar_requests_total", {"upstream": "payments", "method": method, "code": "OK"})

    assert requests("/payments.v1.Payments/A") == 2
    assert requests("/payments.v1.Payments/B") == 1
    assert requests("_other_") == 2
    assert requests("/payments.v1.Payments/C") is None


def test_rejections_fallbacks_and_overflows_are_counted_per_upstream(
        registry: CollectorRegistry, metrics: SidecarMetrics) -> None:
    observer = MetricsObserver(metrics)
    with observer.start_call(call_info()) as scope:
        scope.rejected("open", 900)
        scope.fallback("status", "UNAVAILABLE")
        scope.finish(grpc.StatusCode.UNAVAILABLE, 0.0001)
    with observer.start_call(call_info()) as scope:
        scope.overflow()
        scope.finish(grpc.StatusCode.RESOURCE_EXHAUSTED, 0.0001)

    labels = {"upstream": "payments"}
    assert registry.get_sample_value("sidecar_breaker_rejections_total", labels) == 1
    assert registry.get_sample_value("sidecar_fallbacks_total", labels) == 1
    assert registry.get_sample_value("sidecar_overflow_total", labels) == 1


def test_declared_upstreams_export_zero_counters_before_any_call(
        registry: CollectorRegistry, metrics: SidecarMetrics) -> None:
    metrics.declare_upstreams(["payments", "ledger"])

    for name in ("sidecar_breaker_rejections_total", "sidecar_fallbacks_total",
                 "sidecar_overflow_total"):
        assert registry.get_sample_value(name, {"upstream": "ledger"}) == 0


def test_a_call_that_never_reported_a_status_is_counted_as_unknown(
        registry: CollectorRegistry, metrics: SidecarMetrics) -> None:
    observer = MetricsObserver(metrics)
    with pytest.raises(RuntimeError), observer.start_call(call_info()):
        raise RuntimeError("proxy bug")

    assert registry.get_sample_value("sidecar_requests_total", {
        "upstream": "payments", "method": CHARGE, "code": "UNKNOWN"}) == 1


def _exemplars(registry: CollectorRegistry) -> list[dict[str, str]]:
    return [dict(sample.exemplar.labels)
            for family in registry.collect() if family.name == "sidecar_request_duration_seconds"
            for sample in family.samples if sample.exemplar is not None]


def test_a_sampled_call_leaves_an_exemplar_with_its_trace_id_on_the_latency_bucket(
        registry: CollectorRegistry, metrics: SidecarMetrics) -> None:
    observer = MetricsObserver(metrics)
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("call") as span:
        _call(observer, grpc.StatusCode.OK, duration_s=0.003)

    (exemplar,) = _exemplars(registry)
    assert exemplar["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert exemplar["span_id"] == format(span.get_span_context().span_id, "016x")


def test_an_unsampled_call_leaves_no_exemplar_pointing_at_a_trace_nobody_kept(
        registry: CollectorRegistry, metrics: SidecarMetrics) -> None:
    observer = MetricsObserver(metrics)
    tracer = TracerProvider(sampler=ALWAYS_OFF).get_tracer("t")
    with tracer.start_as_current_span("call"):
        _call(observer, grpc.StatusCode.OK)

    assert _exemplars(registry) == []


def test_every_transition_is_counted_by_breaker_and_states(
        registry: CollectorRegistry, metrics: SidecarMetrics) -> None:
    listener = MetricsBreakerListener(metrics)
    listener.on_transition(transition())
    listener.on_transition(transition(from_state=State.OPEN, to_state=State.HALF_OPEN))
    listener.on_transition(transition(from_state=State.HALF_OPEN, to_state=State.OPEN))
    listener.on_transition(transition())

    def count(from_state: str, to_state: str) -> float | None:
        return registry.get_sample_value("sidecar_breaker_transitions_total", {
            "upstream": "payments", "from_state": from_state, "to_state": to_state})

    assert count("closed", "open") == 2
    assert count("open", "half_open") == 1
    assert count("half_open", "open") == 1


def test_the_collector_reports_one_for_the_current_state_and_zero_for_the_others(
        registry: CollectorRegistry) -> None:
    views = [view("payments", State.OPEN, open_duration_s=4.0),
             view("ledger", State.CLOSED, open_duration_s=1.0)]
    registry.register(BreakerCollector(lambda: views))

    def state(upstream: str, name: str) -> float | None:
        return registry.get_sample_value("sidecar_breaker_state",
                                         {"upstream": upstream, "state": name})

    assert [state("payments", s) for s in ("closed", "open", "half_open")] == [0, 1, 0]
    assert [state("ledger", s) for s in ("closed", "open", "half_open")] == [1, 0, 0]
    assert registry.get_sample_value("sidecar_breaker_open_duration_seconds",
                                     {"upstream": "payments"}) == 4.0


def test_the_collector_reads_the_views_at_each_scrape(registry: CollectorRegistry) -> None:
    views: list[BreakerView] = [view("payments", State.CLOSED)]
    registry.register(BreakerCollector(lambda: views))
    assert registry.get_sample_value(
        "sidecar_breaker_state", {"upstream": "payments", "state": "open"}) == 0

    views[:] = [view("payments", State.HALF_OPEN), view("ledger", State.OPEN)]

    assert registry.get_sample_value(
        "sidecar_breaker_state", {"upstream": "payments", "state": "half_open"}) == 1
    assert registry.get_sample_value(
        "sidecar_breaker_state", {"upstream": "ledger", "state": "open"}) == 1


def test_registering_the_collector_does_not_read_the_breakers(
        registry: CollectorRegistry) -> None:
    def views() -> list[BreakerView]:
        raise AssertionError("read at registration")

    registry.register(BreakerCollector(views))  # describe() must not call views()


def test_the_server_serves_text_and_openmetrics_with_exemplars(
        registry: CollectorRegistry, metrics: SidecarMetrics) -> None:
    observer = MetricsObserver(metrics)
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("call"):
        _call(observer, grpc.StatusCode.OK)
    server = MetricsServer.start("127.0.0.1:0", registry)
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        request = urllib.request.Request(
            url, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        with urllib.request.urlopen(request, timeout=5) as response:
            openmetrics = response.read().decode()
    finally:
        server.close()

    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"sidecar_requests", "sidecar_request_duration_seconds"} <= names
    exemplars = [s.exemplar for f in om_families(openmetrics) for s in f.samples if s.exemplar]
    assert len(exemplars) == 1 and "trace_id" in exemplars[0].labels


def test_bad_buckets_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="duration_buckets_s"):
        SidecarMetrics(CollectorRegistry(), duration_buckets_s=(1.0, 0.5))
