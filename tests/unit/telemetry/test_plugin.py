"""The assembled telemetry: what it plugs into the proxy and how a reload changes it."""

from __future__ import annotations

import io
import json
import logging

import grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from sidecar.breaker import State
from sidecar.config import parse_config
from sidecar.proxy.app import ProxyApp
from sidecar.telemetry.endpoint_metrics import MetricsEndpointListener
from sidecar.telemetry.endpoint_tracing import EndpointTracer
from sidecar.telemetry.logging import LoggingEndpointListener, configure_logging
from sidecar.telemetry.observer import TelemetryObserver
from sidecar.telemetry.plugin import Telemetry
from sidecar.telemetry.tracing import TracingObserver
from tests.support.procs import free_port
from tests.unit.telemetry.builders import call_info, view

CONFIG = """
service: checkout
instance: checkout-1
upstreams:
  payments: {address: "127.0.0.1:50051", routes: ["/payments.v1.Payments/"]}
tracing: {sample_ratio: 0.0}
"""
RELOADED = (
    CONFIG.replace("sample_ratio: 0.0", "sample_ratio: 1.0")
    .replace("upstreams:\n",
             "upstreams:\n  ledger: {address: '127.0.0.1:50052', routes: ['/ledger.v1.Ledger/']}\n")
    + "logging: {level: DEBUG}\n"
)


def _telemetry(environ: dict[str, str] | None = None) -> tuple[Telemetry, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    telemetry = Telemetry(parse_config(CONFIG), registry=CollectorRegistry(),
                          span_exporter=exporter, serve_metrics=False, environ=environ or {})
    return telemetry, exporter


def test_the_plugin_carries_one_observer_for_tracing_and_metrics() -> None:
    telemetry, _ = _telemetry()

    assert [type(o) for o in telemetry.observers] == [TelemetryObserver]
    assert isinstance(telemetry.tracing_observer, TracingObserver)
    assert telemetry.plugin().name == "telemetry"
    telemetry.close()


def test_otel_sdk_disabled_leaves_only_metrics_and_logs() -> None:
    telemetry, _ = _telemetry({"OTEL_SDK_DISABLED": "true"})

    assert telemetry.tracing is None and telemetry.tracing_observer is None
    with telemetry.observers[0].start_call(call_info()) as scope:
        scope.finish(grpc.StatusCode.OK, 0.001)
    assert isinstance(scope, type(telemetry.metrics_observer.start_call(call_info())))
    assert len(telemetry.breaker_listeners) == 2


def test_a_reload_applies_the_sample_ratio_the_log_level_and_new_upstreams() -> None:
    telemetry, exporter = _telemetry()
    stream = io.StringIO()
    pipeline = configure_logging("INFO", stream)
    try:
        telemetry.config_applied(parse_config(CONFIG), "start")
        reloaded = parse_config(RELOADED)
        telemetry.config_applied(reloaded, "reload")
        assert logging.getLogger().level == logging.DEBUG
        with telemetry.observers[0].start_call(call_info()) as scope:
            scope.finish(grpc.StatusCode.OK, 0.001)
        telemetry.close()
    finally:
        pipeline.close()

    assert len(exporter.get_finished_spans()) == 1  # ratio 0 -> 1
    assert telemetry.registry.get_sample_value(
        "sidecar_breaker_rejections_total", {"upstream": "ledger"}) == 0
    applied = [json.loads(line) for line in stream.getvalue().splitlines()
               if '"config_applied"' in line]
    assert [a["source"] for a in applied] == ["start", "reload"]
    assert applied[1]["sample_ratio"] == 1.0
    assert applied[0]["config_digest"] != applied[1]["config_digest"]


def test_breaker_state_comes_from_the_watched_views() -> None:
    telemetry, _ = _telemetry()
    telemetry.watch_breakers(lambda: [view("payments", State.OPEN)])
    telemetry.watch_breakers(lambda: [view("payments", State.HALF_OPEN)])  # replaces

    assert telemetry.registry.get_sample_value(
        "sidecar_breaker_state", {"upstream": "payments", "state": "half_open"}) == 1
    telemetry.close()


ENDPOINTS_CONFIG = """
service: checkout
instance: checkout-1
listen: 127.0.0.1:LISTEN
admin_listen: 127.0.0.1:ADMIN
upstreams:
  payments:
    endpoints: ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
    routes: ["/payments.v1.Payments/"]
  ledger: {address: "127.0.0.1:4", routes: ["/ledger.v1.Ledger/"]}
"""


def test_the_plugin_carries_the_endpoint_listeners() -> None:
    telemetry, _ = _telemetry()
    assert [type(x) for x in telemetry.plugin().endpoint_listeners] == [
        EndpointTracer, MetricsEndpointListener, LoggingEndpointListener]
    telemetry.close()
    untraced, _ = _telemetry({"OTEL_SDK_DISABLED": "true"})
    assert [type(x) for x in untraced.plugin().endpoint_listeners] == [
        MetricsEndpointListener, LoggingEndpointListener]


async def test_in_a_proxy_every_balancer_feeds_telemetry_and_the_live_upstreams_are_read() -> None:
    config = parse_config(ENDPOINTS_CONFIG.replace("LISTEN", str(free_port()))
                          .replace("ADMIN", str(free_port())))
    exporter = InMemorySpanExporter()
    telemetry = Telemetry(config, registry=CollectorRegistry(), span_exporter=exporter,
                          serve_metrics=False, environ={})
    app = ProxyApp(config, plugins=[telemetry.plugin()])
    await app.start()
    try:
        registry = telemetry.registry
        assert registry.get_sample_value("sidecar_upstream_endpoints",
                                         {"upstream": "payments", "state": "active"}) == 3
        assert registry.get_sample_value("sidecar_upstream_endpoints",
                                         {"upstream": "ledger", "state": "active"}) == 1
        assert registry.get_sample_value("sidecar_endpoints_changes_total",
                                         {"upstream": "payments"}) == 1
        app.upstreams["payments"].balancer.ejections_refused = 7  # read through the hook
        assert registry.get_sample_value("sidecar_endpoint_ejections_refused_total",
                                         {"upstream": "payments"}) == 7
    finally:
        await app.stop(grace_s=0)
    changed = [s for s in exporter.get_finished_spans() if s.name == "endpoints.changed"]
    assert sorted((s.attributes or {})["sidecar.upstream"] for s in changed) == [
        "ledger", "payments"]
