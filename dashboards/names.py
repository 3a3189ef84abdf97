"""Names the dashboards share: metric names, label selectors, the datasource variable, grid sizes.

Metric names are a contract (docs/observability.md); the few extra names (overflows, shipping
lag and failures, projection lag, recovery time, ...) are declared here, next to the module of
the code that exports them, so the dashboards' name check (``tests/unit/dashboards``) knows them.
"""

from __future__ import annotations

from typing import Final

DATASOURCE_VAR: Final = "datasource"
"""Template variable holding the Prometheus datasource; provisioning names it ``Prometheus``."""

TAG: Final = "evergreen-sidecar"
"""Every dashboard carries this tag; the dashboards link to each other through it."""

# Non-contract metric names (docs/observability.md lists the contract ones).
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
# contract names (docs/observability.md), declared here too for the dashboards' name check.
SIDECAR_UPSTREAM_ENDPOINTS: Final = "sidecar_upstream_endpoints"
SIDECAR_ENDPOINT_EJECTIONS: Final = "sidecar_endpoint_ejections_total"
SIDECAR_ENDPOINTS_CHANGES: Final = "sidecar_endpoints_changes_total"
SIDECAR_EJECTIONS_REFUSED: Final = "sidecar_endpoint_ejections_refused_total"
SIDECAR_ENDPOINT_METRICS: Final = (
    SIDECAR_UPSTREAM_ENDPOINTS, SIDECAR_ENDPOINT_EJECTIONS, SIDECAR_ENDPOINTS_CHANGES,
    SIDECAR_EJECTIONS_REFUSED,
)
# Retries, hedging and the adaptive limit (sidecar/telemetry/resilience_metrics.py): contract
# names (docs/observability.md) except the in-flight gauge, declared for the name check.
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
