"""The "Sidecar overview" dashboard: traffic, latency, breakers, endpoints and resilience as
one sidecar (or a fleet of them) sees them, from the sidecar's own metrics."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from dashboards import panels as p
from dashboards.names import (
    SIDECAR_BUDGET_EXHAUSTED,
    SIDECAR_CONCURRENCY_IN_FLIGHT,
    SIDECAR_CONCURRENCY_LIMIT,
    SIDECAR_EJECTIONS_REFUSED,
    SIDECAR_ENDPOINT_EJECTIONS,
    SIDECAR_ENDPOINTS_CHANGES,
    SIDECAR_EVENTS_DROPPED,
    SIDECAR_HEDGES,
    SIDECAR_LOAD_SHED,
    SIDECAR_OUTBOX_OLDEST_AGE,
    SIDECAR_OVERFLOWS,
    SIDECAR_RETRIES,
    SIDECAR_SEL,
    SIDECAR_SHIPPING_FAILURES,
    SIDECAR_UPSTREAM_ENDPOINTS,
)


def sidecar_overview() -> dash.Dashboard:
    """Traffic, latency and breakers as one sidecar (or a fleet of them) sees them."""
    requests = f"sidecar_requests_total{{{SIDECAR_SEL}}}"
    errors = f'sidecar_requests_total{{{SIDECAR_SEL}, code!="OK"}}'
    buckets = f"sidecar_request_duration_seconds_bucket{{{SIDECAR_SEL}}}"
    rate = "[$__rate_interval]"
    quantiles = [
        p.query(
            f"histogram_quantile({q}, sum by (upstream, le) (rate({buckets}{rate})))",
            f"{{{{upstream}}}} p{round(q * 100)}", ref, exemplar=True,
        )
        for q, ref in ((0.5, "A"), (0.95, "B"), (0.99, "C"))
    ]
    shipping_scope = 'service=~"$service", instance=~"$instance"'
    overview = (
        p.base(
            "sidecar-overview", "Evergreen Sidecar / Overview",
            "Calls through the sidecar per upstream, the circuit breakers' state, the "
            "shipping of breaker events to the event log, and each upstream's endpoints.",
        )
        .with_variable(p.datasource_variable())
        .with_variable(p.query_variable("service", "Service",
                                       "label_values(sidecar_requests_total, service)"))
        .with_variable(p.query_variable(
            "instance", "Instance",
            'label_values(sidecar_requests_total{service=~"$service"}, instance)'))
        .with_variable(p.query_variable(
            "upstream", "Upstream",
            'label_values(sidecar_requests_total{service=~"$service", instance=~"$instance"}, '
            "upstream)"))
        .annotation(p.transition_annotation(
            "Breaker transitions", "sidecar_breaker_transitions_total", SIDECAR_SEL,
            "upstream, from_state, to_state", "{{upstream}}: {{from_state}} → {{to_state}}"))
        .with_row(dash.Row("Traffic per upstream"))
        .with_panel(p.graph(
            "Requests per second",
            "Calls the host made through the sidecar, per upstream, whatever their outcome "
            "(rejected and fallback answers included).",
            "reqps", [p.query(f"sum by (upstream) (rate({requests}{rate}))", "{{upstream}}", "A")],
            width=8))
        .with_panel(p.graph(
            "Error ratio",
            "Share of calls the host saw end with a status other than OK, per upstream. "
            "Rejections by an open breaker count as errors unless a fallback answered OK.",
            "percentunit",
            [p.query(f"sum by (upstream) (rate({errors}{rate})) / "
                    f"sum by (upstream) (rate({requests}{rate}))", "{{upstream}}", "A")],
            width=8))
        .with_panel(p.graph(
            "Latency p50 / p95 / p99",
            "Call duration as the host sees it. The dots are exemplars: click one to open "
            "the trace of that very call (the datasource maps trace_id to the tracing backend).",
            "s", quantiles, width=8))
        .with_row(dash.Row("Circuit breakers"))
        .with_panel(p.state_timeline(
            "Breaker state",
            "State of each breaker over time, per instance: CLOSED lets calls through, OPEN "
            "rejects them at once, HALF_OPEN lets a few probes test the upstream.",
            p.state_level_expr("sidecar_breaker_state", SIDECAR_SEL, "instance, upstream"),
            "{{upstream}} @ {{instance}}"))
        .with_panel(p.graph(
            "Rejections and fallbacks",
            "Calls an open (or full half-open) breaker refused without touching the upstream, "
            "and calls the upstream's fallback answered instead.",
            "reqps",
            [p.query(f"sum by (upstream) (rate(sidecar_breaker_rejections_total{{{SIDECAR_SEL}}}"
                    f"{rate}))", "rejected {{upstream}}", "A"),
             p.query(f"sum by (upstream) (rate(sidecar_fallbacks_total{{{SIDECAR_SEL}}}{rate}))",
                    "fallback {{upstream}}", "B")],
            width=8))
        .with_panel(p.stat_panel(
            "Current open duration",
            "How long the breaker stays open this time (while OPEN), or how long the next trip "
            "would keep it open. It grows with trips in a row and shrinks as health returns.",
            "s",
            [p.query(f"max by (upstream) (sidecar_breaker_open_duration_seconds{{{SIDECAR_SEL}}})",
                    "{{upstream}}", "A")],
            width=8, thresholds=[(None, "green"), (5, "yellow"), (30, "red")]))
        .with_panel(p.graph(
            "Transitions",
            "Breaker state changes per upstream and target state.",
            "short",
            [p.query(f"sum by (upstream, to_state) (increase(sidecar_breaker_transitions_total"
                    f"{{{SIDECAR_SEL}}}{rate}))", "{{upstream}} → {{to_state}}", "A")],
            width=8, bars=True))
        .with_row(dash.Row("Limits and event shipping"))
        .with_panel(p.graph(
            "Concurrency-limit overflows",
            "Calls refused with RESOURCE_EXHAUSTED because the upstream already had "
            "max_concurrent_requests in flight (the bulkhead).",
            "reqps",
            [p.query(f"sum by (upstream) (rate({SIDECAR_OVERFLOWS}{{{SIDECAR_SEL}}}{rate}))",
                    "{{upstream}}", "A")],
            width=6))
        .with_panel(p.graph(
            "Outbox depth",
            "Breaker events written to the local outbox and not yet acknowledged by the event "
            "log. It rises while the log is unreachable and drains when it is back.",
            "short",
            [p.query(f"sum by (instance) (sidecar_outbox_pending_events{{{shipping_scope}}})",
                    "{{instance}}", "A")],
            width=6))
        .with_panel(p.graph(
            "Shipping lag",
            "Age of the oldest event still waiting in the outbox: how far behind the event "
            "log is for this sidecar.",
            "s",
            [p.query(f"max by (instance) ({SIDECAR_OUTBOX_OLDEST_AGE}{{{shipping_scope}}})",
                    "{{instance}}", "A")],
            width=6))
        .with_panel(p.graph(
            "Events shipped and shipping failures",
            "Events the event log acknowledged; failed shipping attempts (retried with "
            "backoff; appends are idempotent, so a retry never duplicates an event); and "
            "events dropped before the outbox (queue or outbox full): any drop is data loss.",
            "ops",
            [p.query(f"sum by (instance) (rate(sidecar_events_shipped_total{{{shipping_scope}}}"
                    f"{rate}))", "shipped {{instance}}", "A"),
             p.query(f"sum by (instance) (rate({SIDECAR_SHIPPING_FAILURES}{{{shipping_scope}}}"
                    f"{rate}))", "failed {{instance}}", "B"),
             p.query(f"sum by (instance, reason) (rate({SIDECAR_EVENTS_DROPPED}"
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
        .with_panel(p.graph(
            "Retries and budget",
            "Attempts retried per second, by upstream and the status that failed the attempt "
            "(a hedge is not a retry); and retries or hedges the retry budget refused (the "
            "budget caps retries at a share of recent calls so they cannot amplify an outage).",
            "ops",
            [p.query(by_upstream(SIDECAR_RETRIES, ", reason"), "{{upstream}} {{reason}}", "A"),
             p.query(by_upstream(SIDECAR_BUDGET_EXHAUSTED), "budget exhausted {{upstream}}",
                    "B")],
            width=6))
        .with_panel(p.graph(
            "Hedges won/lost",
            "Hedged attempts per second: won (its answer was the one the caller got) or lost "
            "(cancelled or failed while another attempt answered). Mostly lost hedges mean the "
            "hedging delay is shorter than the upstream's usual latency.",
            "ops",
            [p.query(by_upstream(SIDECAR_HEDGES, ", outcome"), "{{outcome}} {{upstream}}", "A")],
            width=6))
        .with_panel(p.graph(
            "Concurrency limit vs in flight",
            "Calls each upstream admits at once (the adaptive limit when "
            "adaptive_concurrency is on, else max_concurrent_requests) and the calls in "
            "flight now, summed over instances. In flight at the limit means calls are shed.",
            "short",
            [p.query(f"sum by (upstream) ({SIDECAR_CONCURRENCY_LIMIT}{{{SIDECAR_SEL}}})",
                    "limit {{upstream}}", "A"),
             p.query(f"sum by (upstream) ({SIDECAR_CONCURRENCY_IN_FLIGHT}{{{SIDECAR_SEL}}})",
                    "in flight {{upstream}}", "B")],
            width=6))
        .with_panel(p.graph(
            "Load shed",
            "Calls refused at once with RESOURCE_EXHAUSTED per second because the upstream's "
            "adaptive concurrency limit was reached (the fixed bulkhead's refusals are the "
            "overflows panel).",
            "reqps",
            [p.query(by_upstream(SIDECAR_LOAD_SHED), "{{upstream}}", "A")],
            width=6))
    )


def _with_endpoint_panels(overview: dash.Dashboard) -> dash.Dashboard:
    """The Overview's last row: each upstream's endpoints, outlier ejections, set changes."""
    rate = "[$__rate_interval]"
    endpoints = f"{SIDECAR_UPSTREAM_ENDPOINTS}{{{SIDECAR_SEL}"
    return (
        overview
        .with_row(dash.Row("Endpoints (balancing and outlier detection)"))
        .with_panel(p.graph(
            "Endpoints per upstream",
            "Endpoints of each upstream taking calls (active) and taken out by outlier "
            "detection (ejected). An ejected endpoint gets no calls until its ejection time "
            "is up; the upstream's breaker opens only when the service as a whole fails.",
            "short",
            [p.query(f'sum by (upstream) ({endpoints}, state="active"}})',
                    "active {{upstream}}", "A"),
             p.query(f'sum by (upstream) ({endpoints}, state="ejected"}})',
                    "ejected {{upstream}}", "B")],
            width=8))
        .with_panel(p.graph(
            "Endpoint ejections",
            "Ejections per second by upstream and rule (consecutive_failures or "
            "failure_rate); and ejections a rule asked for but max_ejection_percent (or the "
            "last active endpoint) refused, so the endpoint kept taking calls.",
            "ops",
            [p.query(f"sum by (upstream, reason) (rate({SIDECAR_ENDPOINT_EJECTIONS}"
                    f"{{{SIDECAR_SEL}}}{rate}))", "{{upstream}} {{reason}}", "A"),
             p.query(f"sum by (upstream) (rate({SIDECAR_EJECTIONS_REFUSED}{{{SIDECAR_SEL}}}"
                    f"{rate}))", "refused {{upstream}}", "B")],
            width=8))
        .with_panel(p.graph(
            "Endpoint set changes",
            "Changes of each upstream's endpoint set: endpoints added or removed by a "
            "discovery refresh (DNS, file) or a reload.",
            "short",
            [p.query(f"sum by (upstream) (increase({SIDECAR_ENDPOINTS_CHANGES}"
                    f"{{{SIDECAR_SEL}}}{rate}))", "{{upstream}}", "A")],
            width=8, bars=True))
    )
