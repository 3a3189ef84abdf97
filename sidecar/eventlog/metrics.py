"""Prometheus metrics of the event log, computed at scrape time from projection state.

Log-derived numbers (events per type, breaker states, open seconds, transitions) are read from
the projections when Prometheus scrapes, never incremented on the side, so a rebuild or a
restart can never double-count them: they are a function of the log. Process-local numbers
(append requests, duplicates, dropped subscribers) are plain counters of this process.

=================================================  =======================================  =======
name                                               labels                                   type
=================================================  =======================================  =======
``eventlog_events_appended_total``                 type                                     counter
``eventlog_duplicates_total``                      (retried events answered, not stored)    counter
``eventlog_breaker_state``                         service, instance, upstream, state       gauge
``eventlog_breaker_open_seconds_total``            service, upstream                        counter
``eventlog_breaker_transitions_total``             service, upstream, from_state, to_state  counter
``eventlog_breaker_recoveries_total``              service, upstream                        counter
``eventlog_breaker_recovery_seconds_total``        service, upstream                        counter
``eventlog_breaker_mean_time_to_recover_seconds``  service, upstream                        gauge
``eventlog_endpoint_ejections_total``              service, upstream                        counter
``eventlog_endpoints_ejected``                     service, upstream                        gauge
``eventlog_shedding_periods_total``                service, upstream                        counter
``eventlog_shed_calls_total``                      service, upstream                        counter
``eventlog_shedding_seconds_total``                service, upstream                        counter
``eventlog_instances_shedding``                    service, upstream                        gauge
``eventlog_unknown_values_total``                  field (a payload's enum field path)      counter
``eventlog_head_position``                                                                  gauge
``eventlog_projection_position``                                                            gauge
``eventlog_projection_lag_events``                 (head - projection position)             gauge
``eventlog_append_requests_total``                 outcome (ok, invalid, conflict, ...)     counter
``eventlog_append_events_total``                   (new events stored by this process)      counter
``eventlog_appends_refused_total``                 reason (``overloaded``: admission limit)  counter
``eventlog_appends_pending``                       (Append requests being served)           gauge
``eventlog_subscribers``                           (subscriptions being served)             gauge
``eventlog_subscribers_dropped_total``             (too slow, RESOURCE_EXHAUSTED)           counter
=================================================  =======================================  =======

Recovery: a breaker's recovery runs from its trip (OPEN) to its next CLOSED, HALF_OPEN probes
and re-trips included, by the producer's clock (the ``breaker_recovery`` projection). The mean
gauge is recovery seconds / recoveries over the whole log, summed over the instances of the
service (removed breakers keep their history, as for open seconds); it has no sample for a
(service, upstream) that never recovered (a mean of nothing is not 0). For a mean over a time
window use the two counters: ``increase(..._recovery_seconds_total[w]) /
increase(..._recoveries_total[w])``.

State label values are lowercase (``closed``, ``open``, ``half_open``), as in the sidecar's
``sidecar_breaker_state``.

Endpoints (the ``endpoint_ejections`` projection): ejections and the endpoints ejected now,
summed over the instances of the service; every upstream the log knows for the service (from
ConfigApplied or an endpoint event) is reported, at 0 before its first ejection.

Shedding (the ``load_shedding`` projection of ``LoadShedding`` events): periods started, calls
shed and seconds spent shedding in the periods that stopped, and the instances shedding now,
summed over the instances of the service; every known upstream is reported, at 0 before its
first period.

Unknown values: a stored enum value the proto does not define (stored before Append checked
enums, or by a newer producer) is shown by the readers as ``UNKNOWN(n)`` (a transition to it
is labelled ``to_state="unknown(99)"``) and counted per field here; every enum field of every
payload is reported, at 0 while all is well.

Threading: the HTTP endpoint runs on prometheus_client's thread, the projections on the
server's event loop. The collector never touches projection state itself: it calls a
``snapshot`` function, which in the server hops onto the loop
(:func:`loop_snapshot`) and returns an immutable :class:`MetricsSnapshot`.

Example (tests build a fresh registry)::

    registry = CollectorRegistry()
    registry.register(EventLogCollector(lambda: snapshot))
    registry.get_sample_value("eventlog_head_position")
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client import CollectorRegistry, disable_created_metrics, start_http_server
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from sidecar.eventlog.api.admission import REFUSAL_REASONS
from sidecar.eventlog.metric_families import families
from sidecar.eventlog.projections.shedding import SheddingTotals
from sidecar.eventlog.settings import parse_host_port

SCRAPE_TIMEOUT_S: Final = 5.0
"""Longest a scrape waits for the event loop to hand over a snapshot."""
APPEND_OUTCOMES: Final = ("ok", "invalid", "conflict", "chain", "store")


class AppendCounters:
    """Process-local counters, bumped on the event loop; read via :meth:`copy`."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = dict.fromkeys(APPEND_OUTCOMES, 0)
        self.events_stored = 0
        self.duplicates = 0
        self.subscribers_dropped = 0
        self.subscribers = 0
        self.appends_refused: dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)
        self.appends_pending = 0

    def appended(self, stored: int, duplicates: int) -> None:
        self.requests["ok"] += 1
        self.events_stored += stored
        self.duplicates += duplicates

    def rejected(self, outcome: str) -> None:
        self.requests[outcome] = self.requests.get(outcome, 0) + 1

    def refused(self, reason: str) -> None:
        """An Append refused before it reached the store (admission); not in ``requests``."""
        self.appends_refused[reason] = self.appends_refused.get(reason, 0) + 1

    def subscriber_dropped(self) -> None:
        self.subscribers_dropped += 1

    def copy(self) -> CountersSnapshot:
        return CountersSnapshot(
            requests=dict(self.requests),
            events_stored=self.events_stored,
            duplicates=self.duplicates,
            subscribers_dropped=self.subscribers_dropped,
            subscribers=self.subscribers,
            appends_refused=dict(self.appends_refused),
            appends_pending=self.appends_pending,
        )


@dataclass(frozen=True, slots=True)
class CountersSnapshot:
    requests: dict[str, int] = field(default_factory=dict)
    events_stored: int = 0
    duplicates: int = 0
    subscribers_dropped: int = 0
    subscribers: int = 0
    appends_refused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        REFUSAL_REASONS, 0))
    appends_pending: int = 0


@dataclass(frozen=True, slots=True)
class BreakerState:
    service: str
    instance: str
    upstream: str
    state: str  # lowercase label value


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Everything one scrape reports, taken at one moment on the event loop."""

    events_by_type: dict[str, int] = field(default_factory=dict)
    breakers: tuple[BreakerState, ...] = ()
    open_seconds: dict[tuple[str, str], float] = field(default_factory=dict)
    transitions: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    recoveries: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    """(completed recoveries, their summed seconds) per (service, upstream)."""
    endpoint_ejections: dict[tuple[str, str], int] = field(default_factory=dict)
    endpoints_ejected: dict[tuple[str, str], int] = field(default_factory=dict)
    shedding: dict[tuple[str, str], SheddingTotals] = field(default_factory=dict)
    unknown_values: dict[str, int] = field(default_factory=dict)
    """Stored enum values without a name, per field path."""
    head_position: int = 0
    projection_position: int = 0
    counters: CountersSnapshot = field(default_factory=CountersSnapshot)


class EventLogCollector(Collector):
    """Yields the ``eventlog_*`` families from ``snapshot()`` (called once per scrape)."""

    def __init__(self, snapshot: Callable[[], MetricsSnapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterator[Metric]:
        # Families without samples: registering must not take a snapshot (that would wait
        # for the event loop from the event loop).
        yield from families(MetricsSnapshot())

    def collect(self) -> Iterator[Metric]:
        yield from families(self._snapshot())


def take_snapshot(follower: Any, counters: AppendCounters, head_position: int) -> MetricsSnapshot:
    """Read the follower's projections into a snapshot (call on the event loop).

    ``follower`` is a :class:`~sidecar.eventlog.projections.follower.ProjectionFollower`.
    """
    views = follower.views()
    endpoints = follower.endpoint_views()
    now_ns = time.time_ns()
    return MetricsSnapshot(
        events_by_type=follower.event_counts(),
        breakers=tuple(
            BreakerState(i.service, i.instance, i.upstream, i.state.lower())
            for i in views.instances(now_ns)
        ),
        open_seconds=views.open_seconds_total(now_ns),
        transitions={
            (svc, up, f.lower(), t.lower()): n
            for (svc, up, f, t), n in views.transition_totals().items()
        },
        recoveries={
            key: (recovered, total_ns / 1e9)
            for key, (recovered, total_ns) in views.recovery_totals().items()
        },
        endpoint_ejections=endpoints.ejection_totals(),
        endpoints_ejected=endpoints.ejected_now(),
        shedding=follower.shedding_views().totals(),
        unknown_values=follower.unknown_values(),
        head_position=max(head_position, follower.position),
        projection_position=follower.position,
        counters=counters.copy(),
    )


def loop_snapshot(
    loop: asyncio.AbstractEventLoop,
    follower: Any,
    counters: AppendCounters,
    store: Any,
    timeout_s: float = SCRAPE_TIMEOUT_S,
) -> Callable[[], MetricsSnapshot]:
    """A thread-safe ``snapshot`` function: runs :func:`take_snapshot` on ``loop``.

    Blocks the calling (HTTP) thread for at most ``timeout_s``; never call it on ``loop``.
    """

    async def on_loop() -> MetricsSnapshot:
        head = await store.head_position()
        return take_snapshot(follower, counters, head)

    def snapshot() -> MetricsSnapshot:
        return asyncio.run_coroutine_threadsafe(on_loop(), loop).result(timeout_s)

    return snapshot


def start_metrics_server(
    listen: str,
    snapshot: Callable[[], MetricsSnapshot],
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
    collectors: Sequence[Collector] = (),
) -> tuple[Any, CollectorRegistry]:
    """Serve ``/metrics`` on ``listen`` (HOST:PORT) from a fresh registry, on a daemon thread;
    over HTTPS when ``certfile`` and ``keyfile`` are given (``--metrics-tls-cert/-key``).

    Returns ``(http_server, registry)``; call ``http_server.shutdown()`` to stop it. Turns off
    the ``*_created`` series process-wide (they double the series count).
    """
    disable_created_metrics()  # type: ignore[no-untyped-call]
    host, port = parse_host_port(listen, "metrics_listen")
    registry = CollectorRegistry(auto_describe=True)
    registry.register(EventLogCollector(snapshot))
    for collector in collectors:  # e.g. retention's (sidecar.eventlog.retention.job)
        registry.register(collector)
    http_server, _thread = start_http_server(
        port, addr=host, registry=registry, certfile=certfile, keyfile=keyfile
    )
    return http_server, registry
