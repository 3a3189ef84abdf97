"""The "Breaker event log" dashboard: what the event log's projections say about breakers,
endpoints and shedding across the fleet, and the log's own health (lag, admission, retention)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from dashboards import panels as p
from dashboards.names import (
    EVENTLOG_APPENDS_PENDING,
    EVENTLOG_APPENDS_REFUSED,
    EVENTLOG_ENDPOINT_EJECTIONS,
    EVENTLOG_ENDPOINTS_EJECTED,
    EVENTLOG_INSTANCES_SHEDDING,
    EVENTLOG_MEAN_TIME_TO_RECOVER,
    EVENTLOG_PROJECTION_LAG,
    EVENTLOG_RETENTION_ANCHOR_AGE,
    EVENTLOG_RETENTION_DELETED,
    EVENTLOG_SEL,
    EVENTLOG_SHEDDING_PERIODS,
    EVENTLOG_STORED_EVENTS,
    EVENTLOG_SU_SEL,
)


def breaker_event_log() -> dash.Dashboard:
    """The fleet's breaker history as the event log's projections tell it."""
    rate = "[$__rate_interval]"
    open_seconds = f"eventlog_breaker_open_seconds_total{{{EVENTLOG_SU_SEL}}}"
    known = (f"count by (service, upstream) "
             f'(eventlog_breaker_state{{{EVENTLOG_SU_SEL}, state="open"}})')
    return (
        p.base(
            "breaker-event-log", "Evergreen Sidecar / Breaker event log",
            "Every breaker transition of every sidecar, from the append-only event log's "
            "projections: state per service and upstream, time spent open, recovery, endpoint "
            "ejections, and the health of the log itself.",
        )
        .with_variable(p.datasource_variable())
        .with_variable(p.query_variable("service", "Service",
                                       "label_values(eventlog_breaker_state, service)"))
        .with_variable(p.query_variable(
            "upstream", "Upstream",
            'label_values(eventlog_breaker_state{service=~"$service"}, upstream)'))
        .with_variable(p.query_variable(
            "instance", "Instance",
            'label_values(eventlog_breaker_state{service=~"$service", upstream=~"$upstream"}, '
            "instance)"))
        .annotation(p.transition_annotation(
            "Breaker transitions (event log)", "eventlog_breaker_transitions_total",
            EVENTLOG_SU_SEL, "service, upstream, from_state, to_state",
            "{{service}}/{{upstream}}: {{from_state}} → {{to_state}}"))
        .with_row(dash.Row("Breakers across the fleet"))
        .with_panel(p.graph(
            "Transitions by service and upstream",
            "Breaker state changes recorded in the log, by service, upstream and target state.",
            "short",
            [p.query(f"sum by (service, upstream, to_state) (increase("
                    f"eventlog_breaker_transitions_total{{{EVENTLOG_SU_SEL}}}{rate}))",
                    "{{service}}/{{upstream}} → {{to_state}}", "A")],
            width=12, bars=True))
        .with_panel(p.graph(
            "Instances with an open breaker",
            "How many instances of each service have the breaker to that upstream OPEN, "
            "out of the instances the log knows.",
            "short",
            [p.query(f"sum by (service, upstream) (eventlog_breaker_state{{{EVENTLOG_SEL}, "
                    f'state="open"}})', "open {{service}}/{{upstream}}", "A"),
             p.query(known, "known {{service}}/{{upstream}}", "B")],
            width=12))
        .with_panel(p.state_timeline(
            "Breaker state per instance",
            "State of each breaker as recorded in the log, per service, instance and upstream.",
            p.state_level_expr("eventlog_breaker_state", EVENTLOG_SEL,
                              "service, instance, upstream"),
            "{{service}}/{{instance}} → {{upstream}}"))
        .with_row(dash.Row("Availability and recovery"))
        .with_panel(p.stat_panel(
            "Seconds spent open",
            "Breaker-seconds spent OPEN over the dashboard's time range, summed over the "
            "instances of each service (the current open period included).",
            "s",
            [p.query(f"sum by (service, upstream) (increase({open_seconds}[$__range]))",
                    "{{service}}/{{upstream}}", "A")],
            width=8, thresholds=[(None, "green"), (60, "yellow"), (600, "red")]))
        .with_panel(p.stat_panel(
            "Availability (time not open)",
            "Share of instance-time the breaker to each upstream was not OPEN over the time "
            "range: 1 - open seconds / (instances * range).",
            "percentunit",
            [p.query(f"1 - sum by (service, upstream) (increase({open_seconds}[$__range])) / "
                    f"({known} * $__range_s)", "{{service}}/{{upstream}}", "A")],
            width=8, thresholds=[(None, "red"), (0.99, "yellow"), (0.999, "green")]))
        .with_panel(p.stat_panel(
            "Mean time to recover",
            "How long an upstream stays cut off once its breaker trips: the mean time from a "
            "trip (OPEN) to CLOSED again, probes and re-trips included, over every recovery "
            "in the log (computed by the event log from the events' own timestamps). Empty "
            "until a breaker has recovered once.",
            "s",
            # max: every event log replica reports the same value, from the same log
            [p.query(f"max by (service, upstream) "
                    f"({EVENTLOG_MEAN_TIME_TO_RECOVER}{{{EVENTLOG_SU_SEL}}})",
                    "{{service}}/{{upstream}}", "A")],
            width=8, thresholds=[(None, "green"), (30, "yellow"), (300, "red")]))
        .with_row(dash.Row("Endpoints (outlier detection)"))
        .with_panel(p.graph(
            "Endpoint ejections by service and upstream",
            "Endpoints outlier detection took out of an upstream's balancer (consecutive "
            "failures or failure rate), summed over the instances of each service, as recorded "
            "in the log.",
            "short",
            [p.query(f"sum by (service, upstream) (increase({EVENTLOG_ENDPOINT_EJECTIONS}"
                    f"{{{EVENTLOG_SU_SEL}}}{rate}))", "{{service}}/{{upstream}}", "A")],
            width=12, bars=True))
        .with_panel(p.graph(
            "Endpoints ejected now",
            "Endpoints ejected and not yet returned (or removed from the set), summed over the "
            "instances of each service: each instance ejects on its own, so one bad endpoint "
            "ejected by three instances counts 3.",
            "short",
            # max: every event log replica reports the same value, from the same log
            [p.query(f"max by (service, upstream) ({EVENTLOG_ENDPOINTS_EJECTED}"
                    f"{{{EVENTLOG_SU_SEL}}})", "{{service}}/{{upstream}}", "A")],
            width=12))
        .with_row(dash.Row("Load shedding (adaptive concurrency)"))
        .with_panel(p.graph(
            "Shedding periods by service and upstream",
            "Periods in which an upstream's adaptive concurrency limit shed calls (one "
            "LoadShedding started/stopped pair per overload, not per call), summed over the "
            "instances of each service, as recorded in the log.",
            "short",
            [p.query(f"sum by (service, upstream) (increase({EVENTLOG_SHEDDING_PERIODS}"
                    f"{{{EVENTLOG_SU_SEL}}}{rate}))", "{{service}}/{{upstream}}", "A")],
            width=12, bars=True))
        .with_panel(p.graph(
            "Instances shedding now",
            "Instances of each service whose limit for the upstream is shedding calls now "
            "(a period started and not yet stopped).",
            "short",
            # max: every event log replica reports the same value, from the same log
            [p.query(f"max by (service, upstream) ({EVENTLOG_INSTANCES_SHEDDING}"
                    f"{{{EVENTLOG_SU_SEL}}})", "{{service}}/{{upstream}}", "A")],
            width=12))
        .with_row(dash.Row("The event log"))
        .with_panel(p.graph(
            "Append rate by event type",
            "Events appended to the log per second, by type.",
            "ops",
            [p.query(f"sum by (type) (rate(eventlog_events_appended_total{rate}))", "{{type}}",
                    "A")],
            width=6))
        .with_panel(p.graph(
            "Duplicate appends",
            "Appends of an event_id already in the log (a shipper retry): answered with the "
            "original position, nothing stored. Harmless; a steady rate means retries.",
            "ops",
            [p.query(f"sum(rate(eventlog_duplicates_total{rate}))", "duplicates", "A")],
            width=6))
        .with_panel(p.graph(
            "Head position",
            "Global position of the newest event in the log.",
            "short",
            [p.query("max(eventlog_head_position)", "head", "A"),
             p.query("min(eventlog_projection_position)", "projections", "B")],
            width=6, min_val=None))
        .with_panel(p.graph(
            "Projection lag",
            "Events appended but not yet folded into the projections (read models). Lasting "
            "lag means the dashboards and status queries are behind the log.",
            "short",
            [p.query(f"max({EVENTLOG_PROJECTION_LAG})", "lag", "A")],
            width=6))
        .with_panel(p.graph(
            "Appends refused (overloaded)",
            "Append requests the event log refused with RESOURCE_EXHAUSTED because more than "
            "--max-pending-appends were waiting for the store (nothing stored; the shippers "
            "retry after the grpc-retry-pushback-ms hint), and the appends waiting now.",
            "short",
            [p.query(f"sum by (reason) (rate({EVENTLOG_APPENDS_REFUSED}{rate}))", "{{reason}}",
                    "A"),
             p.query(f"max({EVENTLOG_APPENDS_PENDING})", "pending", "B")],
            width=6))
        .with_panel(p.graph(
            "Log size per store",
            "Events kept in the log (head position minus what retention deleted), per store "
            "kind. Without retention it only grows; with --retain-days or "
            "--retain-events-per-stream it levels off.",
            "short",
            # max: event log replicas on one JetStream stream report the same log
            [p.query(f"max by (store) ({EVENTLOG_STORED_EVENTS})", "{{store}}", "A")],
            width=6))
        .with_panel(p.graph(
            "Deleted by retention",
            "Events retention deleted (whole oldest prefixes of streams, each leaving an anchor "
            "that verify proves the kept chain from).",
            "short",
            [p.query(f"max by (store) (increase({EVENTLOG_RETENTION_DELETED}{rate}))",
                    "{{store}}", "A")],
            width=6, bars=True))
        .with_panel(p.graph(
            "Retention anchor age",
            "Age of the last deleted event of the newest and oldest anchor. With retention "
            "running the newest stays near the retention period; growing past it means the job "
            "is not keeping up (or nothing new is old enough).",
            "s",
            [p.query(f"max by (anchor) ({EVENTLOG_RETENTION_ANCHOR_AGE})", "{{anchor}}", "A")],
            width=6))
    )
