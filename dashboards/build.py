"""Build the Grafana dashboards from code: ``python dashboards/build.py [--check]``.

The dashboards are written with Grafana Labs' dashboards-as-code SDK
(``grafana-foundation-sdk``) and committed as JSON next to this file, where Grafana's file
provisioning (``dashboards/provisioning/``) picks them up. Edit this file, never the JSON:
``tests/unit/dashboards`` fails when the committed JSON differs from what this file builds,
and ``tests/integration/dashboards`` runs every query below against a real Prometheus that
scrapes a real sidecar and event log, so a panel that would stay empty fails CI.

Metric names are a contract (docs/observability.md); the few extra names (overflows,
shipping lag and failures, projection lag, recovery time) are the constants below, read from
the code that exports them.

Label conventions (set by ``deploy/prometheus.yml``): every sidecar target carries a
``service`` label (the pod's ``app.kubernetes.io/name``) and ``instance`` is the pod name,
which is also the sidecar's default ``instance`` in its events. The event log is scraped with
``honor_labels: true`` so the ``service``/``instance``/``upstream`` labels of its projections
are kept as exported.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import stat, statetimeline, timeseries
from grafana_foundation_sdk.builders.prometheus import Dataquery as PromQuery
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

HERE: Final = Path(__file__).resolve().parent

# --- names -------------------------------------------------------------------------------------

DATASOURCE_VAR: Final = "datasource"
"""Template variable holding the Prometheus datasource; provisioning names it ``Prometheus``."""

TAG: Final = "evergreen-sidecar"
"""Every dashboard carries this tag; the dashboards link to each other through it."""

# Non-contract metric names (DESIGN section 6 lists the contract ones inline below).
SIDECAR_OVERFLOWS: Final = "sidecar_overflow_total"
SIDECAR_OUTBOX_OLDEST_AGE: Final = "sidecar_outbox_oldest_pending_age_seconds"
SIDECAR_SHIPPING_FAILURES: Final = "sidecar_events_ship_failures_total"
SIDECAR_EVENTS_DROPPED: Final = "sidecar_events_dropped_total"
EVENTLOG_PROJECTION_LAG: Final = "eventlog_projection_lag_events"
EVENTLOG_MEAN_TIME_TO_RECOVER: Final = "eventlog_breaker_mean_time_to_recover_seconds"
EVENTLOG_ENDPOINT_EJECTIONS: Final = "eventlog_endpoint_ejections_total"
EVENTLOG_ENDPOINTS_EJECTED: Final = "eventlog_endpoints_ejected"
EVENTLOG_SHEDDING_PERIODS: Final = "eventlog_shedding_periods_total"
EVENTLOG_INSTANCES_SHEDDING: Final = "eventlog_instances_shedding"
# Append admission (sidecar/eventlog/api/admission.py).
EVENTLOG_APPENDS_REFUSED: Final = "eventlog_appends_refused_total"
EVENTLOG_APPENDS_PENDING: Final = "eventlog_appends_pending"
# Retention (sidecar/eventlog/retention/job.py).
EVENTLOG_STORED_EVENTS: Final = "eventlog_stored_events"
EVENTLOG_RETENTION_DELETED: Final = "eventlog_retention_deleted_events_total"
EVENTLOG_RETENTION_ANCHOR_AGE: Final = "eventlog_retention_anchor_age_seconds"
# The sidecar's endpoint metrics (sidecar/telemetry/endpoint_metrics.py): the first three are
# contract names of DESIGN section 6, declared here too so the dashboards' name check knows them.
SIDECAR_UPSTREAM_ENDPOINTS: Final = "sidecar_upstream_endpoints"
SIDECAR_ENDPOINT_EJECTIONS: Final = "sidecar_endpoint_ejections_total"
SIDECAR_ENDPOINTS_CHANGES: Final = "sidecar_endpoints_changes_total"
SIDECAR_EJECTIONS_REFUSED: Final = "sidecar_endpoint_ejections_refused_total"
SIDECAR_ENDPOINT_METRICS: Final = (
    SIDECAR_UPSTREAM_ENDPOINTS, SIDECAR_ENDPOINT_EJECTIONS, SIDECAR_ENDPOINTS_CHANGES,
    SIDECAR_EJECTIONS_REFUSED,
)
# Retries, hedging and the adaptive limit (sidecar/telemetry/resilience_metrics.py): contract
# names of DESIGN section 6 except the in-flight gauge, declared for the name check.
SIDECAR_RETRIES: Final = "sidecar_retries_total"
SIDECAR_BUDGET_EXHAUSTED: Final = "sidecar_retry_budget_exhausted_total"
SIDECAR_HEDGES: Final = "sidecar_hedges_total"
SIDECAR_CONCURRENCY_LIMIT: Final = "sidecar_concurrency_limit"
SIDECAR_CONCURRENCY_IN_FLIGHT: Final = "sidecar_concurrency_in_flight"
SIDECAR_LOAD_SHED: Final = "sidecar_load_shed_total"
SIDECAR_RESILIENCE_METRICS: Final = (
    SIDECAR_RETRIES, SIDECAR_BUDGET_EXHAUSTED, SIDECAR_HEDGES, SIDECAR_CONCURRENCY_LIMIT,
    SIDECAR_CONCURRENCY_IN_FLIGHT, SIDECAR_LOAD_SHED,
)
EXTRA_METRICS: Final = (
    SIDECAR_OVERFLOWS, SIDECAR_OUTBOX_OLDEST_AGE, SIDECAR_SHIPPING_FAILURES,
    SIDECAR_EVENTS_DROPPED, EVENTLOG_PROJECTION_LAG, EVENTLOG_MEAN_TIME_TO_RECOVER,
    EVENTLOG_ENDPOINT_EJECTIONS, EVENTLOG_ENDPOINTS_EJECTED, EVENTLOG_SHEDDING_PERIODS,
    EVENTLOG_INSTANCES_SHEDDING, EVENTLOG_STORED_EVENTS, EVENTLOG_RETENTION_DELETED,
    EVENTLOG_RETENTION_ANCHOR_AGE, EVENTLOG_APPENDS_REFUSED, EVENTLOG_APPENDS_PENDING,
    *SIDECAR_ENDPOINT_METRICS,
    *SIDECAR_RESILIENCE_METRICS,
)

# Breaker states as numbers on the state timelines (0 is healthy, higher is worse).
STATE_LEVELS: Final = (("closed", "green"), ("half_open", "yellow"), ("open", "red"))

SIDECAR_SEL: Final = 'service=~"$service", instance=~"$instance", upstream=~"$upstream"'
EVENTLOG_SEL: Final = 'service=~"$service", instance=~"$instance", upstream=~"$upstream"'
EVENTLOG_SU_SEL: Final = 'service=~"$service", upstream=~"$upstream"'

# Grid: 24 columns; panel heights in grid rows.
GRAPH_HEIGHT: Final = 8
TIMELINE_HEIGHT: Final = 7
STAT_HEIGHT: Final = 6


# --- small builders ---------------------------------------------------------------------------


def _datasource() -> model.DataSourceRef:
    return model.DataSourceRef(type_val="prometheus", uid=f"${{{DATASOURCE_VAR}}}")


def _query(expr: str, legend: str, ref_id: str, *, exemplar: bool = False,
           instant: bool = False) -> PromQuery:
    query = (
        PromQuery().expr(expr).legend_format(legend).ref_id(ref_id).datasource(_datasource())
    )
    if exemplar:
        query = query.exemplar(True)
    return query.instant() if instant else query.range()


def _legend() -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.LIST)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(True)
    )


def _tooltip() -> common_builders.VizTooltipOptions:
    return common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(
        common.SortOrder.DESCENDING
    )


def _graph(title: str, description: str, unit: str, targets: Sequence[PromQuery], *,
           width: int, bars: bool = False, min_val: float | None = 0) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(_datasource())
        .unit(unit)
        .targets(list(targets))
        .span(width)
        .height(GRAPH_HEIGHT)
        .legend(_legend())
        .tooltip(_tooltip())
        .fill_opacity(10)
        .line_width(1)
    )
    if min_val is not None:
        panel = panel.min(min_val)
    if bars:
        panel = (
            panel.draw_style(common.GraphDrawStyle.BARS)
            .fill_opacity(80)
            .stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
        )
    return panel


def _stat(title: str, description: str, unit: str, targets: Sequence[PromQuery], *,
          width: int, thresholds: Sequence[tuple[float | None, str]]) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(_datasource())
        .unit(unit)
        .targets(list(targets))
        .span(width)
        .height(STAT_HEIGHT)
        .graph_mode(common.BigValueGraphMode.AREA)
        .color_mode(common.BigValueColorMode.VALUE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(
            dash.ThresholdsConfig()
            .mode(model.ThresholdsMode.ABSOLUTE)
            .steps([model.Threshold(value=value, color=color) for value, color in thresholds])
        )
    )


def _state_level_expr(metric: str, selector: str, by: str) -> str:
    """One number per breaker: 0 closed, 1 half-open, 2 open (the state gauges are 1 for the
    current state and 0 for the others, so the weighted sum picks the current one)."""
    terms = [
        f"{level} * max by ({by}) ({metric}{{{selector}, state=\"{state}\"}})"
        for level, (state, _) in enumerate(STATE_LEVELS)
        if level
    ]
    return " + ".join(terms)


def _state_timeline(title: str, description: str, expr: str, legend: str) -> statetimeline.Panel:
    mapping = model.ValueMap(
        options={
            str(level): model.ValueMappingResult(text=state.upper(), color=color, index=level)
            for level, (state, color) in enumerate(STATE_LEVELS)
        }
    )
    return (
        statetimeline.Panel()
        .title(title)
        .description(description)
        .datasource(_datasource())
        .targets([_query(expr, legend, "A")])
        .span(24)
        .height(TIMELINE_HEIGHT)
        .mappings([mapping])
        .color_scheme(dash.FieldColor().mode(model.FieldColorModeId.FIXED).fixed_color("green"))
        .show_value(common.VisibilityMode.NEVER)
        .merge_values(True)
        .row_height(0.8)
        .fill_opacity(80)
        .line_width(0)
        .legend(_legend())
    )


def _query_variable(name: str, label: str, query: str) -> dash.QueryVariable:
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(_datasource())
        .query(query)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(model.VariableOption(selected=True, text="All", value="$__all"))
    )


def _datasource_variable() -> dash.DatasourceVariable:
    return (
        dash.DatasourceVariable(DATASOURCE_VAR)
        .label("Prometheus")
        .type("prometheus")
        .current(model.VariableOption(selected=True, text="Prometheus", value="Prometheus"))
    )


class _PromAnnotation(model.AnnotationQuery):
    """A Prometheus annotation: the SDK's model has ``expr`` but not the title/tag/step fields
    Grafana's Prometheus datasource reads, so they are added to its JSON here."""

    def __init__(self, name: str, expr: str, *, title_format: str, tag_keys: str,
                 step: str) -> None:
        super().__init__(name=name, datasource=_datasource(), enable=True, hide=False,
                         icon_color="red", expr=expr)
        self.title_format = title_format
        self.tag_keys = tag_keys
        self.step = step

    def to_json(self) -> dict[str, object]:
        payload = super().to_json()
        payload.update(titleFormat=self.title_format, tagKeys=self.tag_keys, step=self.step,
                       useValueForTime=False)
        return payload


class _AnnotationBuilder(cogbuilder.Builder[model.AnnotationQuery]):
    def __init__(self, annotation: _PromAnnotation) -> None:
        self._annotation = annotation

    def build(self) -> model.AnnotationQuery:
        return self._annotation


def _transition_annotation(name: str, metric: str, selector: str, by: str,
                           title: str) -> _AnnotationBuilder:
    expr = f"sum by ({by}) (increase({metric}{{{selector}}}[$__rate_interval])) > 0"
    return _AnnotationBuilder(
        _PromAnnotation(name, expr, title_format=title, tag_keys=by.replace(" ", ""),
                        step="$__interval")
    )


def _links() -> dash.DashboardLink:
    return (
        dash.DashboardLink("Evergreen Sidecar")
        .type(model.DashboardLinkType.DASHBOARDS)
        .tags([TAG])
        .as_dropdown(True)
        .include_vars(True)
        .keep_time(True)
    )


def _base(uid: str, title: str, description: str) -> dash.Dashboard:
    return (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .editable()
        .refresh("10s")
        .time("now-30m", "now")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .link(_links())
    )


# --- the dashboards ---------------------------------------------------------------------------


def sidecar_overview() -> dash.Dashboard:
    """Traffic, latency and breakers as one sidecar (or a fleet of them) sees them."""
    requests = f"sidecar_requests_total{{{SIDECAR_SEL}}}"
    errors = f'sidecar_requests_total{{{SIDECAR_SEL}, code!="OK"}}'
    buckets = f"sidecar_request_duration_seconds_bucket{{{SIDECAR_SEL}}}"
    rate = "[$__rate_interval]"
    quantiles = [
        _query(
            f"histogram_quantile({q}, sum by (upstream, le) (rate({buckets}{rate})))",
            f"{{{{upstream}}}} p{round(q * 100)}", ref, exemplar=True,
        )
        for q, ref in ((0.5, "A"), (0.95, "B"), (0.99, "C"))
    ]
    shipping_scope = 'service=~"$service", instance=~"$instance"'
    overview = (
        _base(
            "sidecar-overview", "Evergreen Sidecar / Overview",
            "Calls through the sidecar per upstream, the circuit breakers' state, the "
            "shipping of breaker events to the event log, and each upstream's endpoints.",
        )
        .with_variable(_datasource_variable())
        .with_variable(_query_variable("service", "Service",
                                       "label_values(sidecar_requests_total, service)"))
        .with_variable(_query_variable(
            "instance", "Instance",
            'label_values(sidecar_requests_total{service=~"$service"}, instance)'))
        .with_variable(_query_variable(
            "upstream", "Upstream",
            'label_values(sidecar_requests_total{service=~"$service", instance=~"$instance"}, '
            "upstream)"))
        .annotation(_transition_annotation(
            "Breaker transitions", "sidecar_breaker_transitions_total", SIDECAR_SEL,
            "upstream, from_state, to_state", "{{upstream}}: {{from_state}} → {{to_state}}"))
        .with_row(dash.Row("Traffic per upstream"))
        .with_panel(_graph(
            "Requests per second",
            "Calls the host made through the sidecar, per upstream, whatever their outcome "
            "(rejected and fallback answers included).",
            "reqps", [_query(f"sum by (upstream) (rate({requests}{rate}))", "{{upstream}}", "A")],
            width=8))
        .with_panel(_graph(
            "Error ratio",
            "Share of calls the host saw end with a status other than OK, per upstream. "
            "Rejections by an open breaker count as errors unless a fallback answered OK.",
            "percentunit",
            [_query(f"sum by (upstream) (rate({errors}{rate})) / "
                    f"sum by (upstream) (rate({requests}{rate}))", "{{upstream}}", "A")],
            width=8))
        .with_panel(_graph(
            "Latency p50 / p95 / p99",
            "Call duration as the host sees it. The dots are exemplars: click one to open "
            "the trace of that very call (the datasource maps trace_id to the tracing backend).",
            "s", quantiles, width=8))
        .with_row(dash.Row("Circuit breakers"))
        .with_panel(_state_timeline(
            "Breaker state",
            "State of each breaker over time, per instance: CLOSED lets calls through, OPEN "
            "rejects them at once, HALF_OPEN lets a few probes test the upstream.",
            _state_level_expr("sidecar_breaker_state", SIDECAR_SEL, "instance, upstream"),
            "{{upstream}} @ {{instance}}"))
        .with_panel(_graph(
            "Rejections and fallbacks",
            "Calls an open (or full half-open) breaker refused without touching the upstream, "
            "and calls the upstream's fallback answered instead.",
            "reqps",
            [_query(f"sum by (upstream) (rate(sidecar_breaker_rejections_total{{{SIDECAR_SEL}}}"
                    f"{rate}))", "rejected {{upstream}}", "A"),
             _query(f"sum by (upstream) (rate(sidecar_fallbacks_total{{{SIDECAR_SEL}}}{rate}))",
                    "fallback {{upstream}}", "B")],
            width=8))
        .with_panel(_stat(
            "Current open duration",
            "How long the breaker stays open this time (while OPEN), or how long the next trip "
            "would keep it open. It grows with trips in a row and shrinks as health returns.",
            "s",
            [_query(f"max by (upstream) (sidecar_breaker_open_duration_seconds{{{SIDECAR_SEL}}})",
                    "{{upstream}}", "A")],
            width=8, thresholds=[(None, "green"), (5, "yellow"), (30, "red")]))
        .with_panel(_graph(
            "Transitions",
            "Breaker state changes per upstream and target state.",
            "short",
            [_query(f"sum by (upstream, to_state) (increase(sidecar_breaker_transitions_total"
                    f"{{{SIDECAR_SEL}}}{rate}))", "{{upstream}} → {{to_state}}", "A")],
            width=8, bars=True))
        .with_row(dash.Row("Limits and event shipping"))
        .with_panel(_graph(
            "Concurrency-limit overflows",
            "Calls refused with RESOURCE_EXHAUSTED because the upstream already had "
            "max_concurrent_requests in flight (the bulkhead).",
            "reqps",
            [_query(f"sum by (upstream) (rate({SIDECAR_OVERFLOWS}{{{SIDECAR_SEL}}}{rate}))",
                    "{{upstream}}", "A")],
            width=6))
        .with_panel(_graph(
            "Outbox depth",
            "Breaker events written to the local outbox and not yet acknowledged by the event "
            "log. It rises while the log is unreachable and drains when it is back.",
            "short",
            [_query(f"sum by (instance) (sidecar_outbox_pending_events{{{shipping_scope}}})",
                    "{{instance}}", "A")],
            width=6))
        .with_panel(_graph(
            "Shipping lag",
            "Age of the oldest event still waiting in the outbox: how far behind the event "
            "log is for this sidecar.",
            "s",
            [_query(f"max by (instance) ({SIDECAR_OUTBOX_OLDEST_AGE}{{{shipping_scope}}})",
                    "{{instance}}", "A")],
            width=6))
        .with_panel(_graph(
            "Events shipped and shipping failures",
            "Events the event log acknowledged; failed shipping attempts (retried with "
            "backoff; appends are idempotent, so a retry never duplicates an event); and "
            "events dropped before the outbox (queue or outbox full): any drop is data loss.",
            "ops",
            [_query(f"sum by (instance) (rate(sidecar_events_shipped_total{{{shipping_scope}}}"
                    f"{rate}))", "shipped {{instance}}", "A"),
             _query(f"sum by (instance) (rate({SIDECAR_SHIPPING_FAILURES}{{{shipping_scope}}}"
                    f"{rate}))", "failed {{instance}}", "B"),
             _query(f"sum by (instance, reason) (rate({SIDECAR_EVENTS_DROPPED}"
                    f"{{{shipping_scope}}}{rate}))", "dropped {{reason}} {{instance}}", "C")],
            width=6))
    )
    return _with_resilience_panels(_with_endpoint_panels(overview))


def _with_resilience_panels(overview: dash.Dashboard) -> dash.Dashboard:
    """The Overview's row on retries, hedging and the adaptive concurrency limit."""
    rate = "[$__rate_interval]"

    def by_upstream(metric: str, extra: str = "") -> str:
        return f"sum by (upstream{extra}) (rate({metric}{{{SIDECAR_SEL}}}{rate}))"

    return (
        overview
        .with_row(dash.Row("Retries, hedging and adaptive concurrency"))
        .with_panel(_graph(
            "Retries and budget",
            "Attempts retried per second, by upstream and the status that failed the attempt "
            "(a hedge is not a retry); and retries or hedges the retry budget refused (the "
            "budget caps retries at a share of recent calls so they cannot amplify an outage).",
            "ops",
            [_query(by_upstream(SIDECAR_RETRIES, ", reason"), "{{upstream}} {{reason}}", "A"),
             _query(by_upstream(SIDECAR_BUDGET_EXHAUSTED), "budget exhausted {{upstream}}",
                    "B")],
            width=6))
        .with_panel(_graph(
            "Hedges won/lost",
            "Hedged attempts per second: won (its answer was the one the caller got) or lost "
            "(cancelled or failed while another attempt answered). Mostly lost hedges mean the "
            "hedging delay is shorter than the upstream's usual latency.",
            "ops",
            [_query(by_upstream(SIDECAR_HEDGES, ", outcome"), "{{outcome}} {{upstream}}", "A")],
            width=6))
        .with_panel(_graph(
            "Concurrency limit vs in flight",
            "Calls each upstream admits at once (the adaptive limit when "
            "adaptive_concurrency is on, else max_concurrent_requests) and the calls in "
            "flight now, summed over instances. In flight at the limit means calls are shed.",
            "short",
            [_query(f"sum by (upstream) ({SIDECAR_CONCURRENCY_LIMIT}{{{SIDECAR_SEL}}})",
                    "limit {{upstream}}", "A"),
             _query(f"sum by (upstream) ({SIDECAR_CONCURRENCY_IN_FLIGHT}{{{SIDECAR_SEL}}})",
                    "in flight {{upstream}}", "B")],
            width=6))
        .with_panel(_graph(
            "Load shed",
            "Calls refused at once with RESOURCE_EXHAUSTED per second because the upstream's "
            "adaptive concurrency limit was reached (the fixed bulkhead's refusals are the "
            "overflows panel).",
            "reqps",
            [_query(by_upstream(SIDECAR_LOAD_SHED), "{{upstream}}", "A")],
            width=6))
    )


def _with_endpoint_panels(overview: dash.Dashboard) -> dash.Dashboard:
    """The Overview's last row: each upstream's endpoints, outlier ejections, set changes."""
    rate = "[$__rate_interval]"
    endpoints = f"{SIDECAR_UPSTREAM_ENDPOINTS}{{{SIDECAR_SEL}"
    return (
        overview
        .with_row(dash.Row("Endpoints (balancing and outlier detection)"))
        .with_panel(_graph(
            "Endpoints per upstream",
            "Endpoints of each upstream taking calls (active) and taken out by outlier "
            "detection (ejected). An ejected endpoint gets no calls until its ejection time "
            "is up; the upstream's breaker opens only when the service as a whole fails.",
            "short",
            [_query(f'sum by (upstream) ({endpoints}, state="active"}})',
                    "active {{upstream}}", "A"),
             _query(f'sum by (upstream) ({endpoints}, state="ejected"}})',
                    "ejected {{upstream}}", "B")],
            width=8))
        .with_panel(_graph(
            "Endpoint ejections",
            "Ejections per second by upstream and rule (consecutive_failures or "
            "failure_rate); and ejections a rule asked for but max_ejection_percent (or the "
            "last active endpoint) refused, so the endpoint kept taking calls.",
            "ops",
            [_query(f"sum by (upstream, reason) (rate({SIDECAR_ENDPOINT_EJECTIONS}"
                    f"{{{SIDECAR_SEL}}}{rate}))", "{{upstream}} {{reason}}", "A"),
             _query(f"sum by (upstream) (rate({SIDECAR_EJECTIONS_REFUSED}{{{SIDECAR_SEL}}}"
                    f"{rate}))", "refused {{upstream}}", "B")],
            width=8))
        .with_panel(_graph(
            "Endpoint set changes",
            "Changes of each upstream's endpoint set: endpoints added or removed by a "
            "discovery refresh (DNS, file) or a reload.",
            "short",
            [_query(f"sum by (upstream) (increase({SIDECAR_ENDPOINTS_CHANGES}"
                    f"{{{SIDECAR_SEL}}}{rate}))", "{{upstream}}", "A")],
            width=8, bars=True))
    )


def breaker_event_log() -> dash.Dashboard:
    """The fleet's breaker history as the event log's projections tell it."""
    rate = "[$__rate_interval]"
    open_seconds = f"eventlog_breaker_open_seconds_total{{{EVENTLOG_SU_SEL}}}"
    known = (f"count by (service, upstream) "
             f'(eventlog_breaker_state{{{EVENTLOG_SU_SEL}, state="open"}})')
    return (
        _base(
            "breaker-event-log", "Evergreen Sidecar / Breaker event log",
            "Every breaker transition of every sidecar, from the append-only event log's "
            "projections: state per service and upstream, time spent open, recovery, endpoint "
            "ejections, and the health of the log itself.",
        )
        .with_variable(_datasource_variable())
        .with_variable(_query_variable("service", "Service",
                                       "label_values(eventlog_breaker_state, service)"))
        .with_variable(_query_variable(
            "upstream", "Upstream",
            'label_values(eventlog_breaker_state{service=~"$service"}, upstream)'))
        .with_variable(_query_variable(
            "instance", "Instance",
            'label_values(eventlog_breaker_state{service=~"$service", upstream=~"$upstream"}, '
            "instance)"))
        .annotation(_transition_annotation(
            "Breaker transitions (event log)", "eventlog_breaker_transitions_total",
            EVENTLOG_SU_SEL, "service, upstream, from_state, to_state",
            "{{service}}/{{upstream}}: {{from_state}} → {{to_state}}"))
        .with_row(dash.Row("Breakers across the fleet"))
        .with_panel(_graph(
            "Transitions by service and upstream",
            "Breaker state changes recorded in the log, by service, upstream and target state.",
            "short",
            [_query(f"sum by (service, upstream, to_state) (increase("
                    f"eventlog_breaker_transitions_total{{{EVENTLOG_SU_SEL}}}{rate}))",
                    "{{service}}/{{upstream}} → {{to_state}}", "A")],
            width=12, bars=True))
        .with_panel(_graph(
            "Instances with an open breaker",
            "How many instances of each service have the breaker to that upstream OPEN, "
            "out of the instances the log knows.",
            "short",
            [_query(f"sum by (service, upstream) (eventlog_breaker_state{{{EVENTLOG_SEL}, "
                    f'state="open"}})', "open {{service}}/{{upstream}}", "A"),
             _query(known, "known {{service}}/{{upstream}}", "B")],
            width=12))
        .with_panel(_state_timeline(
            "Breaker state per instance",
            "State of each breaker as recorded in the log, per service, instance and upstream.",
            _state_level_expr("eventlog_breaker_state", EVENTLOG_SEL,
                              "service, instance, upstream"),
            "{{service}}/{{instance}} → {{upstream}}"))
        .with_row(dash.Row("Availability and recovery"))
        .with_panel(_stat(
            "Seconds spent open",
            "Breaker-seconds spent OPEN over the dashboard's time range, summed over the "
            "instances of each service (the current open period included).",
            "s",
            [_query(f"sum by (service, upstream) (increase({open_seconds}[$__range]))",
                    "{{service}}/{{upstream}}", "A")],
            width=8, thresholds=[(None, "green"), (60, "yellow"), (600, "red")]))
        .with_panel(_stat(
            "Availability (time not open)",
            "Share of instance-time the breaker to each upstream was not OPEN over the time "
            "range: 1 - open seconds / (instances * range).",
            "percentunit",
            [_query(f"1 - sum by (service, upstream) (increase({open_seconds}[$__range])) / "
                    f"({known} * $__range_s)", "{{service}}/{{upstream}}", "A")],
            width=8, thresholds=[(None, "red"), (0.99, "yellow"), (0.999, "green")]))
        .with_panel(_stat(
            "Mean time to recover",
            "How long an upstream stays cut off once its breaker trips: the mean time from a "
            "trip (OPEN) to CLOSED again, probes and re-trips included, over every recovery "
            "in the log (computed by the event log from the events' own timestamps). Empty "
            "until a breaker has recovered once.",
            "s",
            # max: every event log replica reports the same value, from the same log
            [_query(f"max by (service, upstream) "
                    f"({EVENTLOG_MEAN_TIME_TO_RECOVER}{{{EVENTLOG_SU_SEL}}})",
                    "{{service}}/{{upstream}}", "A")],
            width=8, thresholds=[(None, "green"), (30, "yellow"), (300, "red")]))
        .with_row(dash.Row("Endpoints (outlier detection)"))
        .with_panel(_graph(
            "Endpoint ejections by service and upstream",
            "Endpoints outlier detection took out of an upstream's balancer (consecutive "
            "failures or failure rate), summed over the instances of each service, as recorded "
            "in the log.",
            "short",
            [_query(f"sum by (service, upstream) (increase({EVENTLOG_ENDPOINT_EJECTIONS}"
                    f"{{{EVENTLOG_SU_SEL}}}{rate}))", "{{service}}/{{upstream}}", "A")],
            width=12, bars=True))
        .with_panel(_graph(
            "Endpoints ejected now",
            "Endpoints ejected and not yet returned (or removed from the set), summed over the "
            "instances of each service: each instance ejects on its own, so one bad endpoint "
            "ejected by three instances counts 3.",
            "short",
            # max: every event log replica reports the same value, from the same log
            [_query(f"max by (service, upstream) ({EVENTLOG_ENDPOINTS_EJECTED}"
                    f"{{{EVENTLOG_SU_SEL}}})", "{{service}}/{{upstream}}", "A")],
            width=12))
        .with_row(dash.Row("Load shedding (adaptive concurrency)"))
        .with_panel(_graph(
            "Shedding periods by service and upstream",
            "Periods in which an upstream's adaptive concurrency limit shed calls (one "
            "LoadShedding started/stopped pair per overload, not per call), summed over the "
            "instances of each service, as recorded in the log.",
            "short",
            [_query(f"sum by (service, upstream) (increase({EVENTLOG_SHEDDING_PERIODS}"
                    f"{{{EVENTLOG_SU_SEL}}}{rate}))", "{{service}}/{{upstream}}", "A")],
            width=12, bars=True))
        .with_panel(_graph(
            "Instances shedding now",
            "Instances of each service whose limit for the upstream is shedding calls now "
            "(a period started and not yet stopped).",
            "short",
            # max: every event log replica reports the same value, from the same log
            [_query(f"max by (service, upstream) ({EVENTLOG_INSTANCES_SHEDDING}"
                    f"{{{EVENTLOG_SU_SEL}}})", "{{service}}/{{upstream}}", "A")],
            width=12))
        .with_row(dash.Row("The event log"))
        .with_panel(_graph(
            "Append rate by event type",
            "Events appended to the log per second, by type.",
            "ops",
            [_query(f"sum by (type) (rate(eventlog_events_appended_total{rate}))", "{{type}}",
                    "A")],
            width=6))
        .with_panel(_graph(
            "Duplicate appends",
            "Appends of an event_id already in the log (a shipper retry): answered with the "
            "original position, nothing stored. Harmless; a steady rate means retries.",
            "ops",
            [_query(f"sum(rate(eventlog_duplicates_total{rate}))", "duplicates", "A")],
            width=6))
        .with_panel(_graph(
            "Head position",
            "Global position of the newest event in the log.",
            "short",
            [_query("max(eventlog_head_position)", "head", "A"),
             _query("min(eventlog_projection_position)", "projections", "B")],
            width=6, min_val=None))
        .with_panel(_graph(
            "Projection lag",
            "Events appended but not yet folded into the projections (read models). Lasting "
            "lag means the dashboards and status queries are behind the log.",
            "short",
            [_query(f"max({EVENTLOG_PROJECTION_LAG})", "lag", "A")],
            width=6))
        .with_panel(_graph(
            "Appends refused (overloaded)",
            "Append requests the event log refused with RESOURCE_EXHAUSTED because more than "
            "--max-pending-appends were waiting for the store (nothing stored; the shippers "
            "retry after the grpc-retry-pushback-ms hint), and the appends waiting now.",
            "short",
            [_query(f"sum by (reason) (rate({EVENTLOG_APPENDS_REFUSED}{rate}))", "{{reason}}",
                    "A"),
             _query(f"max({EVENTLOG_APPENDS_PENDING})", "pending", "B")],
            width=6))
        .with_panel(_graph(
            "Log size per store",
            "Events kept in the log (head position minus what retention deleted), per store "
            "kind. Without retention it only grows; with --retain-days or "
            "--retain-events-per-stream it levels off.",
            "short",
            # max: event log replicas on one JetStream stream report the same log
            [_query(f"max by (store) ({EVENTLOG_STORED_EVENTS})", "{{store}}", "A")],
            width=6))
        .with_panel(_graph(
            "Deleted by retention",
            "Events retention deleted (whole oldest prefixes of streams, each leaving an anchor "
            "that verify proves the kept chain from).",
            "short",
            [_query(f"max by (store) (increase({EVENTLOG_RETENTION_DELETED}{rate}))",
                    "{{store}}", "A")],
            width=6, bars=True))
        .with_panel(_graph(
            "Retention anchor age",
            "Age of the last deleted event of the newest and oldest anchor. With retention "
            "running the newest stays near the retention period; growing past it means the job "
            "is not keeping up (or nothing new is old enough).",
            "s",
            [_query(f"max by (anchor) ({EVENTLOG_RETENTION_ANCHOR_AGE})", "{{anchor}}", "A")],
            width=6))
    )


DASHBOARDS: Final[dict[str, Callable[[], dash.Dashboard]]] = {
    "sidecar-overview.json": sidecar_overview,
    "breaker-event-log.json": breaker_event_log,
}
"""Output file name (in ``dashboards/``) → the function that builds it."""


def render(builder: dash.Dashboard) -> str:
    """The dashboard as Grafana JSON: stable key order, two-space indent, final newline.

    Panels (rows included) get ids 1, 2, ... in layout order: Grafana needs them unique
    within a dashboard and the SDK leaves them unset.
    """
    built = builder.build()
    for number, panel in enumerate(built.panels or [], start=1):
        panel.id_val = number
    return JSONEncoder(sort_keys=True, indent=2, ensure_ascii=False).encode(built) + "\n"


def stale_files(directory: Path = HERE) -> list[str]:
    """Names of the committed dashboards that differ from what this file builds."""
    stale = []
    for name, build in DASHBOARDS.items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != render(build()):
            stale.append(name)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when a committed dashboard is stale")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: here)")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.out)
        for name in stale:
            print(f"stale: dashboards/{name} (run: python dashboards/build.py)", file=sys.stderr)
        return 1 if stale else 0
    for name, build in DASHBOARDS.items():
        (args.out / name).write_text(render(build()), encoding="utf-8")
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
