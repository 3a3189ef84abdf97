"""Prometheus metrics of upstream endpoints: how many are in service, ejections, set changes.

==============================================  ==================  ==========================
metric                                          labels              kind
==============================================  ==================  ==========================
``sidecar_upstream_endpoints``                  upstream, state     gauge (*), state ``active``
                                                                    or ``ejected``
``sidecar_endpoint_ejections_total``            upstream, reason    counter, reason
                                                                    ``consecutive_failures`` or
                                                                    ``failure_rate``
``sidecar_endpoints_changes_total``             upstream            counter
``sidecar_endpoint_ejections_refused_total``    upstream            counter (*)
``sidecar_endpoint_requests_total``             upstream, endpoint, counter, only with
                                                code                ``metrics.per_endpoint``
==============================================  ==================  ==========================

(*) computed at scrape time by :class:`EndpointCollector`.

Every label set starts at 0 for each configured upstream (and for upstreams a reload adds), so
``rate()`` and the dashboard panels work before the first ejection. The first endpoint set of
an upstream counts as a change (the balancer reports it, like every later change, and so does
the ``EndpointsChanged`` event).

Where the numbers come from:

- the counters and the gauge follow the balancer's listener records
  (:class:`MetricsEndpointListener`, one per sidecar, on every upstream's balancer): the set
  size from each ``EndpointsChange``, ejected endpoints from ``Ejection`` (with the time it is
  due back) and ``Return``. An endpoint whose ejection time is up counts as active at once,
  even before the next call makes the balancer notice it (the balancer returns ejected
  endpoints lazily, on the next pick). This keeps the scrape thread away from the balancers,
  which belong to the proxy's event loop.
- ``sidecar_endpoint_ejections_refused_total`` is the balancers' own ``ejections_refused``
  (an outlier rule asked for an ejection that ``max_ejection_percent``, or the last active
  endpoint, refused: "why was it not ejected?"), read from the live upstreams at scrape time
  (:meth:`EndpointMetrics.watch_refused`). It restarts from 0 when a reload replaces an
  upstream (a new balancer); ``rate()`` handles that as a counter reset.

Known limit: when a reload replaces an upstream under the same name (its breaker layout
changed), late records of the old balancer (calls still finishing on it) are applied to the
name's state; the gauge may then show one extra ejected endpoint until that ejection's time is
up. A new balancer's first set resets the state when it names an address already known.

Threading: the listener runs on the data path (the event loop) and takes one lock for O(1)
work (O(added + removed) for a set change); the collector takes it on the scrape thread.

Example::

    metrics = EndpointMetrics(registry)
    metrics.declare_upstreams(config.upstreams)
    balancer.add_listener(MetricsEndpointListener(metrics))
    metrics.watch_refused(lambda: {name: u.balancer.ejections_refused
                                   for name, u in app.upstreams.items()})
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Final

import grpc
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sidecar.balancer import Ejection, EndpointListener, EndpointsChange, Return
from sidecar.telemetry._names import OTHER_ENDPOINT

__all__ = [
    "DEFAULT_MAX_ENDPOINTS_PER_UPSTREAM",
    "EJECTION_REASONS",
    "ENDPOINT_STATES",
    "EndpointCollector",
    "EndpointMetrics",
    "MetricsEndpointListener",
    "PerEndpointRequests",
]

ENDPOINT_STATES: Final = ("active", "ejected")
EJECTION_REASONS: Final = ("consecutive_failures", "failure_rate")
DEFAULT_MAX_ENDPOINTS_PER_UPSTREAM: Final = 256
"""Distinct ``endpoint`` label values per upstream (with ``per_endpoint``) before new ones
count as ``_other_``."""


class PerEndpointRequests:
    """``sidecar_endpoint_requests_total{upstream,endpoint,code}``, only while enabled.

    Disabled (the default), the counter is not even registered: no per-endpoint series. Enabled
    by ``metrics.per_endpoint`` (at start or on reload); disabled again, its series are
    removed. A call is counted once, under the endpoint of its last attempt and the status the
    host got. Each upstream keeps at most ``max_endpoints_per_upstream`` endpoint labels, later
    ones counting as ``endpoint="_other_"`` (discovery can bring any number of addresses).
    """

    def __init__(self, registry: CollectorRegistry,
                 max_endpoints_per_upstream: int = DEFAULT_MAX_ENDPOINTS_PER_UPSTREAM) -> None:
        if max_endpoints_per_upstream < 1:
            raise ValueError(f"max_endpoints_per_upstream must be >= 1, "
                             f"got {max_endpoints_per_upstream}")
        self._registry = registry
        self._max = max_endpoints_per_upstream
        self._counter: Counter | None = None
        self._children: dict[tuple[str, str, grpc.StatusCode], Counter] = {}
        self._labels: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self.enabled = False

    def set_enabled(self, enabled: bool) -> None:
        with self._lock:
            if enabled and self._counter is None:
                self._counter = Counter(
                    "sidecar_endpoint_requests",
                    "Calls proxied, by upstream, the endpoint of the call's last attempt and "
                    "the final gRPC status (metrics.per_endpoint).",
                    ["upstream", "endpoint", "code"], registry=self._registry,
                )
            elif not enabled and self._counter is not None:
                self._registry.unregister(self._counter)
                self._counter = None
                self._children.clear()
                self._labels.clear()
            self.enabled = enabled

    def count(self, upstream: str, endpoint: str, code: grpc.StatusCode) -> None:
        child = self._children.get((upstream, endpoint, code))
        if child is None:
            child = self._child(upstream, endpoint, code)
            if child is None:
                return
        child.inc()

    def _child(self, upstream: str, endpoint: str, code: grpc.StatusCode) -> Counter | None:
        with self._lock:
            counter = self._counter
            if counter is None:
                return None
            seen = self._labels.setdefault(upstream, set())
            label = endpoint
            if endpoint not in seen:
                if len(seen) >= self._max:
                    label = OTHER_ENDPOINT
                else:
                    seen.add(endpoint)
            child = counter.labels(upstream, label, code.name)
            if label == endpoint:  # keep the cache bounded too
                self._children[(upstream, endpoint, code)] = child
            return child


class _Endpoints:
    """What the records said about one upstream's endpoint set."""

    __slots__ = ("count", "ejected", "members")

    def __init__(self) -> None:
        self.count = 0
        self.members: set[str] = set()
        self.ejected: dict[str, float] = {}  # address -> wall time it is due back


class EndpointMetrics:
    """The endpoint instruments (registered in ``registry``) and the state behind the gauge.

    ``wall_clock`` (unix seconds) decides when an ejection's time is up; tests inject it.
    """

    def __init__(self, registry: CollectorRegistry, *,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self.ejections = Counter(
            "sidecar_endpoint_ejections",
            "Endpoints ejected by outlier detection, by upstream and the rule that ejected them.",
            ["upstream", "reason"], registry=registry,
        )
        self.changes = Counter(
            "sidecar_endpoints_changes",
            "Changes of an upstream's endpoint set (the first set included).",
            ["upstream"], registry=registry,
        )
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._states: dict[str, _Endpoints] = {}
        self._refused: Callable[[], Mapping[str, int]] = dict
        self._collector = EndpointCollector(self)
        registry.register(self._collector)

    # --- configuration (event loop) -------------------------------------------------------------

    def declare_upstreams(self, upstreams: Iterable[str]) -> None:
        """Every label set of ``upstreams`` at 0; upstreams not in it leave the gauge (a
        reload removed them; their counters stay, as Prometheus counters do)."""
        names = set(upstreams)
        for name in names:
            for reason in EJECTION_REASONS:
                self.ejections.labels(name, reason)
            self.changes.labels(name)
        with self._lock:
            for name in names:
                self._states.setdefault(name, _Endpoints())
            for name in [n for n in self._states if n not in names]:
                del self._states[name]

    def watch_refused(self, refused: Callable[[], Mapping[str, int]]) -> None:
        """Where ``sidecar_endpoint_ejections_refused_total`` comes from: upstream name ->
        its balancer's ``ejections_refused``, called on the scrape thread."""
        self._refused = refused

    # --- records (event loop, data path) ------------------------------------------------------

    def changed(self, change: EndpointsChange) -> None:
        self.changes.labels(change.upstream).inc()
        with self._lock:
            state = self._states.get(change.upstream)
            if state is None or not state.members.isdisjoint(change.added):
                # first set, or a new balancer under a known name (a balancer never "adds" an
                # address it already has): start over
                state = _Endpoints()
                self._states[change.upstream] = state
            state.members.difference_update(change.removed)
            state.members.update(change.added)
            for address in change.removed:
                state.ejected.pop(address, None)
            state.count = change.count

    def ejected(self, ejection: Ejection) -> None:
        self.ejections.labels(ejection.upstream, ejection.reason).inc()
        with self._lock:
            state = self._states.get(ejection.upstream)
            if state is not None:  # None: an upstream a reload removed, still finishing calls
                state.ejected[ejection.endpoint] = ejection.at_wall + ejection.ejection_s

    def returned(self, returned: Return) -> None:
        with self._lock:
            state = self._states.get(returned.upstream)
            if state is not None:
                state.ejected.pop(returned.endpoint, None)

    # --- scrape ---------------------------------------------------------------------------------

    def counts(self) -> dict[str, tuple[int, int]]:
        """Upstream -> (active, ejected) endpoints now."""
        now = self._wall_clock()
        result = {}
        with self._lock:
            for name, state in self._states.items():
                expired = [a for a, until in state.ejected.items() if until <= now]
                for address in expired:
                    del state.ejected[address]
                ejected = min(len(state.ejected), state.count)
                result[name] = (state.count - ejected, ejected)
        return result

    def refused(self) -> dict[str, int]:
        """Upstream -> refused ejections, for every upstream with gauge state (0 when the live
        upstreams do not say)."""
        live = dict(self._refused())
        with self._lock:
            names = set(self._states)
        return {name: int(live.get(name, 0)) for name in sorted(names | set(live))}


class MetricsEndpointListener(EndpointListener):
    """Feeds :class:`EndpointMetrics` from a balancer's records. Never blocks."""

    def __init__(self, metrics: EndpointMetrics) -> None:
        self._metrics = metrics

    def on_ejected(self, ejection: Ejection) -> None:
        self._metrics.ejected(ejection)

    def on_returned(self, returned: Return) -> None:
        self._metrics.returned(returned)

    def on_endpoints_changed(self, change: EndpointsChange) -> None:
        self._metrics.changed(change)


class EndpointCollector(Collector):
    """``sidecar_upstream_endpoints`` and ``sidecar_endpoint_ejections_refused_total`` at
    scrape time (registered by :class:`EndpointMetrics`)."""

    def __init__(self, metrics: EndpointMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return list(self._families({}, {}))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self._metrics.counts(), self._metrics.refused()))

    @staticmethod
    def _families(counts: Mapping[str, tuple[int, int]],
                  refused: Mapping[str, int]) -> Iterator[Metric]:
        endpoints = GaugeMetricFamily(
            "sidecar_upstream_endpoints",
            "Endpoints of each upstream: active (taking calls) or ejected by outlier detection.",
            labels=["upstream", "state"],
        )
        for name in sorted(counts):
            active, ejected = counts[name]
            endpoints.add_metric([name, "active"], float(active))
            endpoints.add_metric([name, "ejected"], float(ejected))
        yield endpoints
        refusals = CounterMetricFamily(
            "sidecar_endpoint_ejections_refused",
            "Ejections an outlier rule asked for but max_ejection_percent (or the last active "
            "endpoint) refused; the endpoint kept taking calls.",
            labels=["upstream"],
        )
        for name in sorted(refused):
            refusals.add_metric([name], float(refused[name]))
        yield refusals
