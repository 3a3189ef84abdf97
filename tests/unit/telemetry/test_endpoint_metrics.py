"""Endpoint metrics against a fresh registry: the gauge and counters fed by real balancers on a
fake clock, refused ejections read from the live upstreams, and per-endpoint request series
only when ``metrics.per_endpoint`` asks for them."""

from __future__ import annotations

from types import SimpleNamespace

import grpc
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from sidecar.config import parse_config
from sidecar.telemetry.endpoint_metrics import EndpointMetrics, MetricsEndpointListener
from sidecar.telemetry.metrics import MetricsObserver, SidecarMetrics
from sidecar.telemetry.plugin import Telemetry
from tests.unit.telemetry.builders import (
    A,
    B,
    C,
    FakeClock,
    balancer,
    call_info,
    change,
    ejection,
    fail,
    returned,
)

CONFIG = """
service: checkout
instance: checkout-1
upstreams:
  payments: {endpoints: ["10.0.0.1:50051", "10.0.0.2:50051"], routes: ["/payments.v1.Payments/"]}
  ledger: {address: "127.0.0.1:50052", routes: ["/ledger.v1.Ledger/"]}
"""


class Fixture:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.registry = CollectorRegistry()
        self.metrics = EndpointMetrics(self.registry, wall_clock=self.clock.wall)
        self.listener = MetricsEndpointListener(self.metrics)

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def endpoints(self, upstream: str = "payments") -> tuple[float | None, float | None]:
        return (self.value("sidecar_upstream_endpoints", upstream=upstream, state="active"),
                self.value("sidecar_upstream_endpoints", upstream=upstream, state="ejected"))


@pytest.fixture
def fx() -> Fixture:
    return Fixture()


def test_every_label_set_starts_at_zero_for_every_declared_upstream(fx: Fixture) -> None:
    fx.metrics.declare_upstreams(["payments", "ledger"])

    for upstream in ("payments", "ledger"):
        assert fx.endpoints(upstream) == (0, 0)
        assert fx.value("sidecar_endpoints_changes_total", upstream=upstream) == 0
        assert fx.value("sidecar_endpoint_ejections_refused_total", upstream=upstream) == 0
        for reason in ("consecutive_failures", "failure_rate"):
            assert fx.value("sidecar_endpoint_ejections_total", upstream=upstream,
                            reason=reason) == 0


def test_a_real_balancer_drives_the_gauge_and_the_counters(fx: Fixture) -> None:
    fx.metrics.declare_upstreams(["payments"])
    upstream = balancer([fx.listener], fx.clock, base_ejection_ms=1000)
    assert fx.endpoints() == (3, 0)
    assert fx.value("sidecar_endpoints_changes_total", upstream="payments") == 1  # first set

    fail(upstream, A, 5)
    assert fx.endpoints() == (2, 1)
    assert fx.value("sidecar_endpoint_ejections_total", upstream="payments",
                    reason="consecutive_failures") == 1
    assert fx.value("sidecar_endpoint_ejections_total", upstream="payments",
                    reason="failure_rate") == 0

    fx.clock.advance(1.0)  # time is up; no call has made the balancer notice it yet
    assert fx.endpoints() == (3, 0)
    upstream.pick()  # the balancer notices: a Return, nothing changes
    assert fx.endpoints() == (3, 0)


def test_a_return_and_a_removal_take_an_endpoint_out_of_the_ejected_count(fx: Fixture) -> None:
    upstream = balancer([fx.listener], fx.clock, addresses=(A, B, C, "10.0.0.4:50051"),
                        base_ejection_ms=60_000)
    fail(upstream, A, 5)
    fail(upstream, B, 5)
    assert fx.endpoints() == (2, 2)

    upstream.update_endpoints({B: B, C: C, "10.0.0.4:50051": "x"}, "endpoints")  # A leaves
    assert fx.endpoints() == (2, 1)
    assert fx.value("sidecar_endpoints_changes_total", upstream="payments") == 2

    upstream.update_endpoints({C: C, "10.0.0.4:50051": "x"}, "endpoints")  # B leaves too
    assert fx.endpoints() == (2, 0)


def test_a_failure_rate_ejection_is_counted_under_its_reason(fx: Fixture) -> None:
    upstream = balancer([fx.listener], fx.clock, consecutive_failures=None, failure_rate=0.5,
                        minimum_calls=4)
    fail(upstream, A, 4)
    assert fx.value("sidecar_endpoint_ejections_total", upstream="payments",
                    reason="failure_rate") == 1


def test_refused_ejections_come_from_the_live_balancers(fx: Fixture) -> None:
    fx.metrics.declare_upstreams(["payments", "ledger"])
    upstream = balancer([fx.listener], fx.clock, max_ejection_percent=34)  # 1 of 3 at most
    fail(upstream, A, 5)
    fail(upstream, B, 5)  # would be the second: refused
    fail(upstream, B, 1)  # and again
    live = {"payments": SimpleNamespace(balancer=upstream)}
    fx.metrics.watch_refused(lambda: {n: u.balancer.ejections_refused for n, u in live.items()})

    assert fx.value("sidecar_endpoint_ejections_refused_total", upstream="payments") == 2
    assert fx.value("sidecar_endpoint_ejections_refused_total", upstream="ledger") == 0
    assert fx.endpoints() == (2, 1)


def test_a_reload_declares_added_upstreams_and_drops_removed_ones_from_the_gauge(
        fx: Fixture) -> None:
    fx.metrics.declare_upstreams(["payments", "ledger"])
    fx.listener.on_endpoints_changed(change(upstream="ledger", added=(A,), count=1))
    fx.metrics.declare_upstreams(["payments", "orders"])

    assert fx.endpoints("orders") == (0, 0)
    assert fx.endpoints("ledger") == (None, None)
    assert fx.value("sidecar_endpoints_changes_total", upstream="ledger") == 1  # counters stay
    fx.listener.on_ejected(ejection(upstream="ledger"))  # a late record of the removed one
    assert fx.endpoints("ledger") == (None, None)
    assert fx.value("sidecar_endpoint_ejections_total", upstream="ledger",
                    reason="consecutive_failures") == 1


def test_a_new_balancer_under_a_known_name_starts_the_gauge_over(fx: Fixture) -> None:
    at = fx.clock.wall()
    fx.listener.on_endpoints_changed(change(added=(A, B, C), count=3))
    fx.listener.on_ejected(ejection(endpoint=A, at_wall=at, ejection_s=60))
    assert fx.endpoints() == (2, 1)
    fx.listener.on_endpoints_changed(change(added=(A, B), count=2))  # a reload replaced it
    assert fx.endpoints() == (2, 0)
    fx.listener.on_returned(returned(endpoint=B))  # unknown: nothing to take back
    assert fx.endpoints() == (2, 0)


def test_an_empty_first_set_is_zero_active(fx: Fixture) -> None:
    fx.listener.on_endpoints_changed(change(added=(), count=0, source="dns"))
    assert fx.endpoints() == (0, 0)
    assert fx.value("sidecar_endpoints_changes_total", upstream="payments") == 1


# --- per-endpoint request series ---------------------------------------------------------------


def _call(observer: MetricsObserver, endpoints: tuple[str, ...], code: grpc.StatusCode,
          upstream: str = "payments") -> None:
    with observer.start_call(call_info(upstream=upstream)) as scope:
        for address in endpoints:
            scope.endpoint(address)
        scope.finish(code, 0.001)


def test_without_per_endpoint_there_is_no_per_endpoint_series_at_all() -> None:
    registry = CollectorRegistry()
    observer = MetricsObserver(SidecarMetrics(registry))
    _call(observer, (A,), grpc.StatusCode.OK)

    text = generate_latest(registry).decode()
    assert "sidecar_endpoint_requests" not in text
    assert registry.get_sample_value(
        "sidecar_requests_total",
        {"upstream": "payments", "method": "/payments.v1.Payments/Charge", "code": "OK"}) == 1


def test_with_per_endpoint_each_call_counts_under_its_last_endpoint_and_final_code() -> None:
    registry = CollectorRegistry()
    metrics = SidecarMetrics(registry)
    metrics.per_endpoint.set_enabled(True)
    observer = MetricsObserver(metrics)
    _call(observer, (A,), grpc.StatusCode.OK)
    _call(observer, (A,), grpc.StatusCode.OK)
    _call(observer, (A, B), grpc.StatusCode.UNAVAILABLE)  # retried on B, failed there
    _call(observer, (), grpc.StatusCode.UNAVAILABLE)  # never reached an endpoint

    def requests(endpoint: str, code: str) -> float | None:
        return registry.get_sample_value("sidecar_endpoint_requests_total", {
            "upstream": "payments", "endpoint": endpoint, "code": code})

    assert requests(A, "OK") == 2
    assert requests(B, "UNAVAILABLE") == 1
    assert requests(A, "UNAVAILABLE") is None
    assert sum(s.value for f in registry.collect() if f.name == "sidecar_endpoint_requests"
               for s in f.samples if s.name.endswith("_total")) == 3


def test_a_call_the_proxy_failed_to_finish_counts_as_unknown_on_its_endpoint() -> None:
    registry = CollectorRegistry()
    metrics = SidecarMetrics(registry)
    metrics.per_endpoint.set_enabled(True)
    with pytest.raises(RuntimeError), \
            MetricsObserver(metrics).start_call(call_info()) as scope:
        scope.endpoint(C)
        raise RuntimeError("bug")
    assert registry.get_sample_value("sidecar_endpoint_requests_total", {
        "upstream": "payments", "endpoint": C, "code": "UNKNOWN"}) == 1


def test_endpoint_labels_are_capped_per_upstream() -> None:
    registry = CollectorRegistry()
    metrics = SidecarMetrics(registry)
    metrics.per_endpoint = type(metrics.per_endpoint)(registry, max_endpoints_per_upstream=2)
    metrics.per_endpoint.set_enabled(True)
    observer = MetricsObserver(metrics)
    for address in (A, B, C, "10.0.0.4:50051"):
        _call(observer, (address,), grpc.StatusCode.OK)

    endpoints = {s.labels["endpoint"] for f in registry.collect()
                 if f.name == "sidecar_endpoint_requests" for s in f.samples
                 if s.name.endswith("_total")}
    assert endpoints == {A, B, "_other_"}
    assert registry.get_sample_value("sidecar_endpoint_requests_total", {
        "upstream": "payments", "endpoint": "_other_", "code": "OK"}) == 2


def test_telemetry_follows_metrics_per_endpoint_at_start_and_on_reload() -> None:
    registry = CollectorRegistry()
    telemetry = Telemetry(parse_config(CONFIG + "metrics: {per_endpoint: true}\n"),
                          registry=registry, serve_metrics=False,
                          environ={"OTEL_SDK_DISABLED": "true"})
    _call(telemetry.metrics_observer, (A,), grpc.StatusCode.OK)
    labels = {"upstream": "payments", "endpoint": A, "code": "OK"}
    assert registry.get_sample_value("sidecar_endpoint_requests_total", labels) == 1

    telemetry.config_applied(parse_config(CONFIG), "reload")  # per_endpoint back to false
    _call(telemetry.metrics_observer, (A,), grpc.StatusCode.OK)
    assert "sidecar_endpoint_requests" not in generate_latest(registry).decode()

    telemetry.config_applied(parse_config(CONFIG + "metrics: {per_endpoint: true}\n"), "reload")
    _call(telemetry.metrics_observer, (B,), grpc.StatusCode.OK)
    assert registry.get_sample_value("sidecar_endpoint_requests_total",
                                     {**labels, "endpoint": B}) == 1
    telemetry.close()


def test_telemetry_declares_the_endpoint_metrics_of_every_configured_upstream() -> None:
    registry = CollectorRegistry()
    telemetry = Telemetry(parse_config(CONFIG), registry=registry, serve_metrics=False,
                          environ={"OTEL_SDK_DISABLED": "true"})
    for upstream in ("payments", "ledger"):
        for state in ("active", "ejected"):
            assert registry.get_sample_value("sidecar_upstream_endpoints",
                                             {"upstream": upstream, "state": state}) == 0
        assert registry.get_sample_value("sidecar_endpoint_ejections_total",
                                         {"upstream": upstream, "reason": "failure_rate"}) == 0
    telemetry.config_applied(parse_config(CONFIG.replace("ledger", "orders")), "reload")
    assert registry.get_sample_value("sidecar_endpoints_changes_total",
                                     {"upstream": "orders"}) == 0
    assert registry.get_sample_value("sidecar_upstream_endpoints",
                                     {"upstream": "ledger", "state": "active"}) is None
    telemetry.close()
