"""The Grafana dashboards as a user meets them: generated from code, fresh, complete, and wired
to the contract metric names of docs/observability.md (tests/integration/dashboards runs every
query)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards import build
from dashboards import names as dashboard_names
from dashboards.queries import LABEL_VALUES, dashboard_queries, expand, panels

ROOT = Path(__file__).resolve().parents[3]
DASHBOARDS = ROOT / "dashboards"

CONTRACT_METRICS = {
    "sidecar_requests_total", "sidecar_request_duration_seconds", "sidecar_breaker_state",
    "sidecar_breaker_transitions_total", "sidecar_breaker_rejections_total",
    "sidecar_fallbacks_total", "sidecar_breaker_open_duration_seconds",
    "sidecar_outbox_pending_events", "sidecar_events_shipped_total",
    "eventlog_events_appended_total", "eventlog_duplicates_total", "eventlog_breaker_state",
    "eventlog_breaker_open_seconds_total", "eventlog_breaker_transitions_total",
    "eventlog_head_position", "eventlog_projection_position",
}
EXTRA_METRICS = set(dashboard_names.EXTRA_METRICS)


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DASHBOARDS / name).read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def overview() -> dict[str, Any]:
    return _load("sidecar-overview.json")


@pytest.fixture(scope="module")
def event_log() -> dict[str, Any]:
    return _load("breaker-event-log.json")


def test_committed_dashboards_are_what_build_py_generates() -> None:
    # stale_files() loops over build.DASHBOARDS: an empty table would pass, so pin it
    assert sorted(build.DASHBOARDS) == ["breaker-event-log.json", "sidecar-overview.json"]
    assert all((DASHBOARDS / name).is_file() for name in build.DASHBOARDS)
    assert build.stale_files() == [], "run: .venv/bin/python dashboards/build.py"


def test_the_check_mode_reports_a_stale_dashboard(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert build.main(["--out", str(tmp_path)]) == 0
    (tmp_path / "sidecar-overview.json").write_text("{}", encoding="utf-8")
    assert build.main(["--check", "--out", str(tmp_path)]) == 1
    assert "sidecar-overview.json" in capsys.readouterr().err


def test_sidecar_overview_has_the_panels_an_operator_looks_for(overview: dict[str, Any]) -> None:
    titles = {panel["title"] for panel in panels(overview)}
    assert titles >= {
        "Requests per second", "Error ratio", "Latency p50 / p95 / p99", "Breaker state",
        "Rejections and fallbacks", "Current open duration", "Concurrency-limit overflows",
        "Outbox depth", "Shipping lag", "Retries and budget", "Hedges won/lost",
        "Concurrency limit vs in flight", "Load shed",
    }
    timeline = next(p for p in panels(overview) if p["title"] == "Breaker state")
    assert timeline["type"] == "state-timeline"
    texts = {r["text"] for r in timeline["fieldConfig"]["defaults"]["mappings"][0]["options"]
             .values()}
    assert texts == {"CLOSED", "HALF_OPEN", "OPEN"}


def test_breaker_event_log_has_the_panels_an_operator_looks_for(
        event_log: dict[str, Any]) -> None:
    titles = {panel["title"] for panel in panels(event_log)}
    assert titles >= {
        "Transitions by service and upstream", "Instances with an open breaker",
        "Seconds spent open", "Availability (time not open)", "Mean time to recover",
        "Append rate by event type", "Duplicate appends", "Head position", "Projection lag",
        "Shedding periods by service and upstream", "Instances shedding now",
    }


@pytest.mark.parametrize("name", sorted(build.DASHBOARDS))
def test_every_dashboard_filters_by_service_upstream_and_instance(name: str) -> None:
    dashboard = _load(name)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"datasource", "service", "upstream", "instance"} <= set(variables)
    for var in ("service", "upstream", "instance"):
        assert variables[var]["includeAll"] and variables[var]["allValue"] == ".*"
        assert LABEL_VALUES.match(variables[var]["query"]), variables[var]["query"]
    breaker_queries = [q for q in dashboard_queries(dashboard)
                       if q.kind == "panel" and "breaker_state" in q.expr]
    assert breaker_queries and all('upstream=~"$upstream"' in q.expr for q in breaker_queries)


@pytest.mark.parametrize("name", sorted(build.DASHBOARDS))
def test_every_panel_queries_prometheus_through_the_datasource_variable(name: str) -> None:
    dashboard = _load(name)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert len(list(panels(dashboard))) >= 5, "the check below would pass on no panel"
    for panel in panels(dashboard):
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert target["expr"] and target["datasource"]["uid"] == "${datasource}"


@pytest.mark.parametrize("name", sorted(build.DASHBOARDS))
def test_dashboards_use_only_known_metric_names(name: str) -> None:
    used = set()
    for query in dashboard_queries(_load(name)):
        for metric in re.findall(r"\b((?:sidecar|eventlog)_[a-z_]+)\b", query.expr):
            used.add(metric.removesuffix("_bucket"))
    assert used, f"{name}: no query names a sidecar_/eventlog_ metric"
    unknown = used - CONTRACT_METRICS - EXTRA_METRICS
    assert not unknown, (
        f"not a contract name (docs/observability.md) nor in dashboards/names.py: {unknown}"
    )


def test_latency_queries_ask_for_exemplars_and_exemplars_link_to_traces(
        overview: dict[str, Any]) -> None:
    latency = next(p for p in panels(overview) if p["title"] == "Latency p50 / p95 / p99")
    assert [t["exemplar"] for t in latency["targets"]] == [True, True, True]
    provisioning = yaml.safe_load(
        (DASHBOARDS / "provisioning/datasources/evergreen-sidecar.yaml").read_text())
    prometheus = next(d for d in provisioning["datasources"] if d["type"] == "prometheus")
    tempo = next(d for d in provisioning["datasources"] if d["type"] == "tempo")
    (destination,) = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    # the sidecar's exemplars are {trace_id, span_id} (sidecar/telemetry/metrics.py)
    assert destination == {"name": "trace_id", "datasourceUid": tempo["uid"]}


@pytest.mark.parametrize("name", sorted(build.DASHBOARDS))
def test_breaker_transitions_are_annotations(name: str) -> None:
    (annotation,) = _load(name)["annotations"]["list"]
    assert "breaker_transitions_total" in annotation["expr"]
    assert annotation["enable"] and "{{to_state}}" in annotation["titleFormat"]


def test_provisioning_serves_the_generated_dashboards_from_the_datasource_they_expect() -> None:
    provider = yaml.safe_load(
        (DASHBOARDS / "provisioning/dashboards/evergreen-sidecar.yaml").read_text())
    (entry,) = provider["providers"]
    assert entry["type"] == "file" and entry["options"]["path"]
    datasources = yaml.safe_load(
        (DASHBOARDS / "provisioning/datasources/evergreen-sidecar.yaml").read_text())
    names = {d["name"] for d in datasources["datasources"]}
    for name in build.DASHBOARDS:
        variable = next(v for v in _load(name)["templating"]["list"]
                        if v["name"] == "datasource")
        assert variable["current"]["value"] in names


def test_expand_replaces_grafana_builtins_like_grafana_does() -> None:
    expr = 'rate(x{a=~"$a", b="${b}"}[$__rate_interval]) / $__range_s + y[$__range]'
    assert expand(expr, {"a": "one|two", "b": "three"}, step_s=1, scrape_s=1, range_s=90) == (
        'rate(x{a=~"one|two", b="three"}[4s]) / 90 + y[90s]')


def test_expand_refuses_a_variable_without_a_value() -> None:
    with pytest.raises(KeyError, match=r"\$missing"):
        expand("up{a=\"$missing\"}", {}, step_s=1, scrape_s=1, range_s=60)


def _exported_names() -> set[str]:
    """Every metric name the code exports (fresh registries, nothing running)."""
    from prometheus_client import CollectorRegistry

    from sidecar.eventlog.metrics import EventLogCollector, MetricsSnapshot
    from sidecar.events.metrics import EventsCollector
    from sidecar.events.producer import EventQueue
    from sidecar.telemetry.endpoint_metrics import EndpointMetrics
    from sidecar.telemetry.metrics import BreakerCollector, SidecarMetrics
    from sidecar.telemetry.resilience_metrics import ConcurrencyCollector

    registry = CollectorRegistry()
    metrics = SidecarMetrics(registry)
    metrics.declare_upstreams(["payments"])
    EndpointMetrics(registry).declare_upstreams(["payments"])
    metrics.duration.labels("payments", "/shop.Payments/Charge").observe(0.01)  # buckets appear
    registry.register(BreakerCollector(lambda: []))
    registry.register(ConcurrencyCollector(lambda: {}))
    registry.register(EventsCollector(queue=EventQueue(1), outbox=lambda: None,
                                      shipper=lambda: None))
    registry.register(EventLogCollector(lambda: MetricsSnapshot()))
    from sidecar.eventlog.retention.job import RetentionCollector, RetentionJob

    no_store: Any = None  # the collector reads the job's figures only
    registry.register(RetentionCollector(RetentionJob(no_store, no_store, None), "sqlite",
                                         lambda: 0))
    names = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
    return names


def test_every_metric_a_dashboard_queries_is_exported_by_the_code() -> None:
    exported = _exported_names()
    checked = 0
    for name in build.DASHBOARDS:
        for query in dashboard_queries(_load(name)):
            for metric in re.findall(r"\b((?:sidecar|eventlog)_[a-z_]+)\b", query.expr):
                assert metric in exported, f"{query.name} uses {metric}, which nothing exports"
                checked += 1
    assert checked >= len(CONTRACT_METRICS), f"only {checked} metric references checked"


def test_mean_time_to_recover_reads_the_metric_the_event_log_exports(
        event_log: dict[str, Any]) -> None:
    from prometheus_client import CollectorRegistry

    from sidecar.eventlog.metrics import EventLogCollector, MetricsSnapshot

    panel = next(p for p in panels(event_log) if p["title"] == "Mean time to recover")
    (target,) = panel["targets"]
    registry = CollectorRegistry()
    registry.register(EventLogCollector(
        lambda: MetricsSnapshot(recoveries={("checkout", "payments"): (2, 40.0)})))
    labels = {"service": "checkout", "upstream": "payments"}

    assert dashboard_names.EVENTLOG_MEAN_TIME_TO_RECOVER in target["expr"]
    assert registry.get_sample_value(dashboard_names.EVENTLOG_MEAN_TIME_TO_RECOVER, labels) == 20.0


def test_endpoint_panels_read_the_endpoint_metrics_the_event_log_exports(
        event_log: dict[str, Any]) -> None:
    from prometheus_client import CollectorRegistry

    from sidecar.eventlog.metrics import EventLogCollector, MetricsSnapshot

    by_title = {p["title"]: p for p in panels(event_log)}
    (ejections,) = by_title["Endpoint ejections by service and upstream"]["targets"]
    (ejected,) = by_title["Endpoints ejected now"]["targets"]
    registry = CollectorRegistry()
    registry.register(EventLogCollector(lambda: MetricsSnapshot(
        endpoint_ejections={("checkout", "payments"): 3},
        endpoints_ejected={("checkout", "payments"): 1})))
    labels = {"service": "checkout", "upstream": "payments"}

    assert f"increase({dashboard_names.EVENTLOG_ENDPOINT_EJECTIONS}" in ejections["expr"]
    assert dashboard_names.EVENTLOG_ENDPOINTS_EJECTED in ejected["expr"]
    assert 'upstream=~"$upstream"' in ejections["expr"] and 'service=~"$service"' in ejected["expr"]
    assert registry.get_sample_value(dashboard_names.EVENTLOG_ENDPOINT_EJECTIONS, labels) == 3
    assert registry.get_sample_value(dashboard_names.EVENTLOG_ENDPOINTS_EJECTED, labels) == 1
