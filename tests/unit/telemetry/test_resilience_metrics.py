"""Retry, hedge and shedding metrics: every series starts at 0 for the configured upstreams, and
what the proxy reports on a call's scope is counted once, under the right labels."""

from __future__ import annotations

import grpc
from prometheus_client import CollectorRegistry

from sidecar.config import parse_config
from sidecar.telemetry.metrics import MetricsObserver, SidecarMetrics
from tests.unit.telemetry.builders import call_info

CONFIG = """
service: checkout
upstreams:
  orders:
    endpoints: [127.0.0.1:50051, 127.0.0.1:50052]
    routes: ["/orders.v1.Orders/"]
    retry: {max_attempts: 3, methods: ["/orders.v1.Orders/Get"],
            retryable_codes: [UNAVAILABLE, RESOURCE_EXHAUSTED], per_try_timeout_ms: 200}
    hedging: {methods: ["/orders.v1.Orders/Search"]}
  payments:
    address: 127.0.0.1:50053
    routes: ["/payments.v1.Payments/"]
"""
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def _metrics() -> tuple[CollectorRegistry, MetricsObserver]:
    registry = CollectorRegistry()
    metrics = SidecarMetrics(registry)
    metrics.declare_upstreams(parse_config(CONFIG).upstreams)
    return registry, MetricsObserver(metrics)


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_every_series_starts_at_zero_for_each_configured_upstream() -> None:
    registry, _ = _metrics()
    for reason in ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "per_try_timeout"):
        assert _value(registry, "sidecar_retries_total", upstream="orders", reason=reason) == 0
    assert _value(registry, "sidecar_retries_total", upstream="payments",
                  reason="UNAVAILABLE") == 0
    for upstream in ("orders", "payments"):
        assert _value(registry, "sidecar_retry_budget_exhausted_total", upstream=upstream) == 0
        assert _value(registry, "sidecar_load_shed_total", upstream=upstream) == 0
        for outcome in ("won", "lost"):
            assert _value(registry, "sidecar_hedges_total", upstream=upstream,
                          outcome=outcome) == 0


def test_a_retried_call_counts_one_retry_by_reason_and_a_refused_one_by_budget() -> None:
    registry, observer = _metrics()
    info = call_info(upstream="orders", method="/orders.v1.Orders/Get")
    with observer.start_call(info) as scope:
        scope.attempt_started(1, "127.0.0.1:50051", False)
        scope.attempt_ended(1, UNAVAILABLE, 0.01, "retried")
        scope.retry("UNAVAILABLE", 0.025)
        scope.attempt_started(2, "127.0.0.1:50052", False)
        scope.attempt_ended(2, UNAVAILABLE, 0.01, "failed")
        scope.retry_refused("budget")
        scope.finish(UNAVAILABLE, 0.05)
    with observer.start_call(info) as scope:
        scope.retry_refused("pushback")  # not a budget refusal
        scope.finish(UNAVAILABLE, 0.01)
    assert _value(registry, "sidecar_retries_total", upstream="orders", reason="UNAVAILABLE") == 1
    assert _value(registry, "sidecar_retry_budget_exhausted_total", upstream="orders") == 1
    assert _value(registry, "sidecar_requests_total", upstream="orders",
                  method="/orders.v1.Orders/Get", code="UNAVAILABLE") == 2


def test_hedges_are_counted_won_or_lost_when_they_end_and_are_not_retries() -> None:
    registry, observer = _metrics()
    info = call_info(upstream="orders", method="/orders.v1.Orders/Search")
    with observer.start_call(info) as scope:  # the hedge answers first
        scope.attempt_started(1, "127.0.0.1:50051", False)
        scope.hedge(2)
        scope.attempt_started(2, "127.0.0.1:50052", True)
        scope.attempt_ended(2, grpc.StatusCode.OK, 0.02, "committed")
        scope.attempt_ended(1, None, 0.06, "lost")
        scope.finish(grpc.StatusCode.OK, 0.06)
    with observer.start_call(info) as scope:  # the first attempt answers, the hedge loses
        scope.attempt_started(1, "127.0.0.1:50051", False)
        scope.attempt_started(2, "127.0.0.1:50052", True)
        scope.attempt_ended(1, grpc.StatusCode.OK, 0.07, "committed")
        scope.attempt_ended(2, None, 0.02, "lost")
        scope.attempt_ended(2, None, 0.02, "lost")  # a second report of the same attempt
        scope.finish(grpc.StatusCode.OK, 0.07)
    assert _value(registry, "sidecar_hedges_total", upstream="orders", outcome="won") == 1
    assert _value(registry, "sidecar_hedges_total", upstream="orders", outcome="lost") == 1
    assert _value(registry, "sidecar_retries_total", upstream="orders", reason="UNAVAILABLE") == 0


def test_a_shed_call_is_counted_per_upstream() -> None:
    registry, observer = _metrics()
    with observer.start_call(call_info(upstream="payments",
                                       method="/payments.v1.Payments/Charge")) as scope:
        scope.shed(8, 8)
        scope.finish(grpc.StatusCode.RESOURCE_EXHAUSTED, 0.0001)
    assert _value(registry, "sidecar_load_shed_total", upstream="payments") == 1
    assert _value(registry, "sidecar_load_shed_total", upstream="orders") == 0
