"""One JSON log line when an upstream starts shedding over its adaptive limit, one when it stops."""

from __future__ import annotations

import io
import json

from sidecar.resilience import SheddingChange
from sidecar.telemetry.logging import configure_logging
from sidecar.telemetry.resilience_logging import LoggingSheddingListener


def test_a_shedding_period_is_a_warning_line_and_an_info_line() -> None:
    stream = io.StringIO()
    pipeline = configure_logging("INFO", stream)
    listener = LoggingSheddingListener()
    listener.on_shedding(SheddingChange("payments", "started", 8, 8, 1, "gradient2", 0.0))
    listener.on_shedding(SheddingChange("payments", "stopped", 11, 2, 412, "gradient2", 3.2))
    pipeline.close()

    started, stopped = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert started["level"] == "WARNING"
    assert started["msg"] == ("upstream payments: shedding calls over the adaptive limit 8 "
                              "(gradient2, 8 in flight)")
    assert (started["event"], started["limit"], started["in_flight"]) == (
        "load_shedding_started", 8, 8)
    assert stopped["level"] == "INFO"
    assert stopped["msg"] == "upstream payments: stopped shedding after 3.2 s, 412 calls shed " \
                             "(limit 11)"
    assert (stopped["event"], stopped["shed"], stopped["duration_ms"]) == (
        "load_shedding_stopped", 412, 3200)


def test_budget_refusals_are_one_json_line_per_interval_not_one_per_call() -> None:
    from prometheus_client import CollectorRegistry

    from sidecar.telemetry.resilience_metrics import BUDGET_LOG_INTERVAL_S, ResilienceMetrics
    from tests.support.fake_clock import FakeClock

    stream = io.StringIO()
    pipeline = configure_logging("INFO", stream)
    clock = FakeClock()
    registry = CollectorRegistry()
    metrics = ResilienceMetrics(registry, clock=clock)
    for _ in range(50):  # two methods' call scopes of one upstream share its limiter
        metrics.for_upstream("orders").budget_refused()
    clock.advance(BUDGET_LOG_INTERVAL_S)
    metrics.for_upstream("orders").budget_refused()
    metrics.for_upstream("payments").budget_refused()
    pipeline.close()

    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert [(x["upstream"], x["occurrences"], x["occurrences_total"]) for x in lines] == [
        ("orders", 1, 1), ("orders", 50, 51), ("payments", 1, 1)]
    assert {(x["level"], x["event"]) for x in lines} == {("WARNING", "retry_budget_exhausted")}
    assert lines[0]["msg"].startswith("upstream orders: retry budget exhausted")
    assert registry.get_sample_value("sidecar_retry_budget_exhausted_total",
                                     {"upstream": "orders"}) == 51
