"""The ``eventlog_*`` metric families of one scrape, built from a :class:`MetricsSnapshot`.

:mod:`sidecar.eventlog.metrics` says what each family means and how a snapshot is taken on the
event loop; this module only turns a snapshot into Prometheus families (pure, no I/O), so a
test can check every sample from a hand-made snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from sidecar.eventlog.metrics import MetricsSnapshot

__all__ = ["STATE_LABELS", "families"]

STATE_LABELS: Final = ("closed", "open", "half_open")
"""The ``state`` label values of ``eventlog_breaker_state`` (lowercase, as the sidecar's)."""


def families(s: MetricsSnapshot) -> Iterator[Metric]:
    appended = CounterMetricFamily(
        "eventlog_events_appended",
        "Events stored in the log, by type (from projection state).",
        labels=["type"],
    )
    for event_type, count in sorted(s.events_by_type.items()):
        appended.add_metric([event_type], count)
    yield appended

    yield CounterMetricFamily(
        "eventlog_duplicates",
        "Appended events that were already stored (idempotent retries), since start.",
        value=s.counters.duplicates,
    )

    state = GaugeMetricFamily(
        "eventlog_breaker_state",
        "Breaker state per sidecar instance: 1 for the current state, 0 for the others.",
        labels=["service", "instance", "upstream", "state"],
    )
    for b in s.breakers:
        for label in STATE_LABELS:
            value = 1.0 if b.state == label else 0.0
            state.add_metric([b.service, b.instance, b.upstream, label], value)
    yield state

    open_seconds = CounterMetricFamily(
        "eventlog_breaker_open_seconds",
        "Seconds breakers of this service/upstream spent OPEN, summed over instances "
        "(current open periods included).",
        labels=["service", "upstream"],
    )
    for (service, upstream), seconds in sorted(s.open_seconds.items()):
        open_seconds.add_metric([service, upstream], seconds)
    yield open_seconds

    transitions = CounterMetricFamily(
        "eventlog_breaker_transitions",
        "Breaker state changes, summed over instances.",
        labels=["service", "upstream", "from_state", "to_state"],
    )
    for (service, upstream, from_state, to_state), count in sorted(s.transitions.items()):
        transitions.add_metric([service, upstream, from_state, to_state], count)
    yield transitions

    yield from _recovery_families(s.recoveries)
    yield from _endpoint_families(s)

    yield GaugeMetricFamily(
        "eventlog_head_position", "Global position of the last stored event.", s.head_position
    )
    yield GaugeMetricFamily(
        "eventlog_projection_position",
        "Global position the projections have folded up to.",
        s.projection_position,
    )
    yield GaugeMetricFamily(
        "eventlog_projection_lag_events",
        "Stored events not yet folded into the projections.",
        max(0, s.head_position - s.projection_position),
    )

    requests = CounterMetricFamily(
        "eventlog_append_requests",
        "Append requests by outcome, since start.",
        labels=["outcome"],
    )
    for outcome, count in sorted(s.counters.requests.items()):
        requests.add_metric([outcome], count)
    yield requests
    yield CounterMetricFamily(
        "eventlog_append_events",
        "New events stored by this server process (rate() = append rate).",
        value=s.counters.events_stored,
    )
    refused = CounterMetricFamily(
        "eventlog_appends_refused",
        "Append requests refused with RESOURCE_EXHAUSTED before the store (nothing stored), "
        "by reason, since start.",
        labels=["reason"],
    )
    for reason, count in sorted(s.counters.appends_refused.items()):
        refused.add_metric([reason], count)
    yield refused
    yield GaugeMetricFamily(
        "eventlog_appends_pending",
        "Append requests being served now (the admission limit is --max-pending-appends).",
        s.counters.appends_pending,
    )
    yield GaugeMetricFamily(
        "eventlog_subscribers", "Subscriptions being served.", s.counters.subscribers
    )
    yield CounterMetricFamily(
        "eventlog_subscribers_dropped",
        "Subscriptions ended with RESOURCE_EXHAUSTED for falling behind, since start.",
        value=s.counters.subscribers_dropped,
    )


def _recovery_families(
    recoveries: dict[tuple[str, str], tuple[int, float]],
) -> Iterator[Metric]:
    labels = ["service", "upstream"]
    count = CounterMetricFamily(
        "eventlog_breaker_recoveries",
        "Completed breaker recoveries (a trip to OPEN until CLOSED again), summed over "
        "instances.",
        labels=labels,
    )
    seconds = CounterMetricFamily(
        "eventlog_breaker_recovery_seconds",
        "Seconds from trip (OPEN) to CLOSED of the completed recoveries, summed over instances.",
        labels=labels,
    )
    mean = GaugeMetricFamily(
        "eventlog_breaker_mean_time_to_recover_seconds",
        "Mean seconds from a breaker's trip (OPEN) to CLOSED again over every completed "
        "recovery in the log (no sample before the first recovery).",
        labels=labels,
    )
    for (service, upstream), (recovered, total_s) in sorted(recoveries.items()):
        count.add_metric([service, upstream], recovered)
        seconds.add_metric([service, upstream], total_s)
        if recovered:
            mean.add_metric([service, upstream], total_s / recovered)
    yield count
    yield seconds
    yield mean


def _endpoint_families(s: MetricsSnapshot) -> Iterator[Metric]:
    labels = ["service", "upstream"]
    ejections = CounterMetricFamily(
        "eventlog_endpoint_ejections",
        "Endpoints outlier detection took out of their upstream's balancer, summed over "
        "instances (from the log).",
        labels=labels,
    )
    for (service, upstream), count in sorted(s.endpoint_ejections.items()):
        ejections.add_metric([service, upstream], count)
    yield ejections
    ejected = GaugeMetricFamily(
        "eventlog_endpoints_ejected",
        "Endpoints ejected now, summed over instances (ejected and not yet returned or "
        "removed).",
        labels=labels,
    )
    for (service, upstream), count in sorted(s.endpoints_ejected.items()):
        ejected.add_metric([service, upstream], count)
    yield ejected
    yield from _shedding_families(s)
    unknown = CounterMetricFamily(
        "eventlog_unknown_values",
        "Stored enum values the proto does not define (shown as UNKNOWN(n)), per field.",
        labels=["field"],
    )
    for path, count in sorted(s.unknown_values.items()):
        unknown.add_metric([path], count)
    yield unknown


def _shedding_families(s: MetricsSnapshot) -> Iterator[Metric]:
    labels = ["service", "upstream"]
    periods = CounterMetricFamily(
        "eventlog_shedding_periods",
        "Load-shedding periods of adaptive concurrency limits, summed over instances.",
        labels=labels)
    shed = CounterMetricFamily(
        "eventlog_shed_calls", "Calls shed in the shedding periods that stopped.", labels=labels)
    seconds = CounterMetricFamily(
        "eventlog_shedding_seconds", "Seconds spent shedding in the periods that stopped.",
        labels=labels)
    now = GaugeMetricFamily(
        "eventlog_instances_shedding", "Instances of the service shedding calls now.",
        labels=labels)
    for (service, upstream), totals in sorted(s.shedding.items()):
        periods.add_metric([service, upstream], totals.periods)
        shed.add_metric([service, upstream], totals.shed)
        seconds.add_metric([service, upstream], totals.shedding_s)
        now.add_metric([service, upstream], totals.shedding_now)
    yield periods
    yield shed
    yield seconds
    yield now
