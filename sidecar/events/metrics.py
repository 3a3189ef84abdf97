"""Prometheus metrics of the event pipeline, computed at scrape time by one custom collector.

==============================================  =======  =========================================
metric                                          labels   meaning
==============================================  =======  =========================================
``sidecar_outbox_pending_events`` (contract)             unshipped events in the outbox
``sidecar_outbox_awaiting_head_events``                  of those: waiting for their stream head
``sidecar_outbox_oldest_pending_age_seconds``            age of the oldest unshipped event (0: none)
``sidecar_events_queued``                                events between the breaker and the writer
``sidecar_events_shipped_total`` (contract)              events the event log acknowledged
``sidecar_events_duplicates_total``                      of those: the log already had them
``sidecar_events_ship_failures_total``          code     failed Append/ReadStream calls
``sidecar_events_dropped_total``                reason   lost: ``queue_full``, ``outbox_full``
``sidecar_eventlog_breaker_state``              state    the shipper's own breaker (1 = current)
``sidecar_eventlog_rollbacks_total``                     log found behind what it acknowledged
==============================================  =======  =========================================

The pieces keep plain counters; :class:`EventsCollector` reads them (and the outbox) when
Prometheus scrapes, on the HTTP server's thread. Reading the outbox takes its lock and runs two
indexed queries: cheap, and never on the data path.

Example::

    registry = CollectorRegistry()
    registry.register(EventsCollector(queue=queue, outbox=outbox, shipper=shipper))
    registry.get_sample_value("sidecar_outbox_pending_events")
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sidecar.breaker import State
from sidecar.events.outbox import Outbox, OutboxStats
from sidecar.events.producer import EventQueue
from sidecar.events.shipper import Shipper, ShipperStats

__all__ = ["DROP_REASONS", "EventsCollector"]

DROP_REASONS: Final = ("queue_full", "outbox_full")


class EventsCollector(Collector):
    """Yields the event pipeline's metrics from the live objects at each scrape.

    ``outbox`` and ``shipper`` may be None before the pipeline has started (the families are
    still exported, at zero, so dashboards and ``rate()`` work from the first scrape).
    """

    def __init__(self, *, queue: EventQueue, outbox: Callable[[], Outbox | None],
                 shipper: Callable[[], Shipper | None],
                 wall_clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._queue = queue
        self._outbox = outbox
        self._shipper = shipper
        self._wall_clock_ns = wall_clock_ns

    def describe(self) -> Iterable[Metric]:
        return list(self._families(None, None))

    def collect(self) -> Iterable[Metric]:
        outbox = self._outbox()
        shipper = self._shipper()
        return list(self._families(outbox.stats() if outbox is not None else None,
                                   shipper.stats() if shipper is not None else None))

    def _families(self, outbox: OutboxStats | None,
                  shipper: ShipperStats | None) -> Iterable[Metric]:
        pending = GaugeMetricFamily(
            "sidecar_outbox_pending_events",
            "Breaker events in the local outbox not yet acknowledged by the event log.",
            value=outbox.pending if outbox else 0)
        awaiting = GaugeMetricFamily(
            "sidecar_outbox_awaiting_head_events",
            "Outbox events not numbered yet: their stream head is being read from the event log.",
            value=outbox.awaiting_head if outbox else 0)
        age_s = 0.0
        if outbox is not None and outbox.oldest_pending_occurred_at_ns is not None:
            age_s = max(0.0, (self._wall_clock_ns() - outbox.oldest_pending_occurred_at_ns) / 1e9)
        age = GaugeMetricFamily(
            "sidecar_outbox_oldest_pending_age_seconds",
            "Age of the oldest breaker event not yet acknowledged by the event log (0 when none).",
            value=age_s)
        queued = GaugeMetricFamily(
            "sidecar_events_queued",
            "Breaker events waiting in memory for the outbox writer.",
            value=self._queue.depth())
        shipped = CounterMetricFamily(
            "sidecar_events_shipped",
            "Breaker events acknowledged by the event log (duplicates of a retry included).",
            value=shipper.shipped if shipper else 0)
        duplicates = CounterMetricFamily(
            "sidecar_events_duplicates",
            "Shipped events the event log already had (a retry after a lost answer or a crash).",
            value=shipper.duplicates if shipper else 0)
        failures = CounterMetricFamily(
            "sidecar_events_ship_failures",
            "Failed calls to the event log while shipping, by gRPC status.",
            labels=["code"])
        for code, count in sorted((shipper.failures if shipper else {}).items()):
            failures.add_metric([code], count)
        dropped = CounterMetricFamily(
            "sidecar_events_dropped",
            "Breaker events lost before reaching the outbox: the in-memory queue or the outbox "
            "was full.",
            labels=["reason"])
        dropped.add_metric(["queue_full"], self._queue.dropped)
        dropped.add_metric(["outbox_full"], outbox.refused if outbox else 0)
        breaker = GaugeMetricFamily(
            "sidecar_eventlog_breaker_state",
            "State of the shipper's own circuit breaker around the event log (1 = current).",
            labels=["state"])
        current = shipper.breaker_state if shipper else State.CLOSED
        for state in State:
            breaker.add_metric([state.value], 1.0 if state is current else 0.0)
        rollbacks = CounterMetricFamily(
            "sidecar_eventlog_rollbacks",
            "Times the event log's head was found behind, or with another hash than, what it had "
            "acknowledged (restored from an older backup, stream recreated).",
            value=shipper.rollbacks if shipper else 0)
        return [pending, awaiting, age, queued, shipped, duplicates, failures, dropped, breaker,
                rollbacks]
