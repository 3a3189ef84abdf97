"""Prometheus metrics of the sidecar (names and labels are a contract: docs/observability.md).

=============================================  =====================================  =========
metric                                         labels                                 kind
=============================================  =====================================  =========
``sidecar_requests_total``                     upstream, method, code                 counter
``sidecar_request_duration_seconds``           upstream, method                       histogram
``sidecar_breaker_state``                      upstream, state                        gauge (*)
``sidecar_breaker_open_duration_seconds``      upstream                               gauge (*)
``sidecar_breaker_transitions_total``          upstream, from_state, to_state         counter
``sidecar_breaker_rejections_total``           upstream                               counter
``sidecar_fallbacks_total``                    upstream                               counter
``sidecar_overflow_total``                     upstream                               counter
``sidecar_endpoint_requests_total`` (**)       upstream, endpoint, code               counter
=============================================  =====================================  =========

(*) computed at scrape time by :class:`BreakerCollector` from each breaker's ``view()``.
(**) only with ``metrics: {per_endpoint: true}``
(:class:`~sidecar.telemetry.endpoint_metrics.PerEndpointRequests`): off by default,
no series at all, since endpoints come and go with discovery and each one adds series.

Retries, hedges and the concurrency limit (``sidecar_retries_total``, ``sidecar_hedges_total``,
``sidecar_concurrency_limit``, ...) are in :mod:`sidecar.telemetry.resilience_metrics`.

The endpoint metrics (``sidecar_upstream_endpoints``, ``sidecar_endpoint_ejections_total``,
``sidecar_endpoints_changes_total``, ...) are in :mod:`sidecar.telemetry.endpoint_metrics`.

Labels: ``code`` is the gRPC status name the host received (``OK``, ``UNAVAILABLE``...).
``upstream`` is the configured upstream name; on the breaker metrics it is the breaker name,
which is the upstream name unless the upstream uses ``per_method`` breakers
(``upstream/<method>``). Cardinality is bounded: a call that matched no route is counted under
``upstream="_unrouted_", method="_unrouted_"``, and each upstream keeps at most
``max_methods_per_upstream`` method labels, later ones being counted as ``method="_other_"``.

The latency histogram carries an OpenMetrics exemplar ``{trace_id, span_id}`` for sampled
calls, so a latency spike on a dashboard links to its trace (scrape with
``Accept: application/openmetrics-text``).

Every instrument lives in the registry given to :class:`SidecarMetrics`, so tests build a
fresh ``CollectorRegistry()``::

    registry = CollectorRegistry()
    metrics = SidecarMetrics(registry)
    observer = MetricsObserver(metrics)
    registry.register(BreakerCollector(lambda: [b.view() for b in breakers]))
    server = MetricsServer.start("127.0.0.1:9464", registry)

Threading: observers and listeners are called on the data path (event loop or any thread);
they only increment in-memory counters (prometheus_client's per-value locks), never block.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Final

import grpc
from opentelemetry import trace
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sidecar.breaker import BreakerListener, BreakerView, State, Transition
from sidecar.telemetry._fast_metrics import Incrementable, LatencyBuckets, counter_value
from sidecar.telemetry._names import OTHER_METHOD, UNROUTED
from sidecar.telemetry.endpoint_metrics import PerEndpointRequests
from sidecar.telemetry.resilience_metrics import ResilienceMetrics, UpstreamResilience

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from sidecar.protection import CallInfo

__all__ = [
    "DEFAULT_DURATION_BUCKETS_S",
    "DEFAULT_MAX_METHODS_PER_UPSTREAM",
    "BreakerCollector",
    "MetricsBreakerListener",
    "MetricsObserver",
    "MetricsServer",
    "SidecarMetrics",
]

DEFAULT_DURATION_BUCKETS_S: Final[tuple[float, ...]] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
"""Latency buckets from 100 µs (a proxied call on loopback) to 10 s (a slow deadline)."""

DEFAULT_MAX_METHODS_PER_UPSTREAM: Final = 100
"""Distinct ``method`` label values per upstream before new ones count as ``_other_``."""

_STATES: Final = tuple(State)
_SAMPLED: Final = int(trace.TraceFlags.SAMPLED)
_OK: Final = grpc.StatusCode.OK


class SidecarMetrics:
    """The sidecar's Prometheus instruments, all registered in ``registry``.

    Example::

        registry = CollectorRegistry()
        metrics = SidecarMetrics(registry)
        metrics.rejections.labels("payments").inc()
        registry.get_sample_value("sidecar_breaker_rejections_total", {"upstream": "payments"})
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        duration_buckets_s: tuple[float, ...] = DEFAULT_DURATION_BUCKETS_S,
    ) -> None:
        if not duration_buckets_s or list(duration_buckets_s) != sorted(set(duration_buckets_s)):
            raise ValueError("duration_buckets_s must be a non-empty, strictly increasing tuple")
        self.registry = registry
        self.requests = Counter(
            "sidecar_requests", "Calls proxied, by upstream, method and final gRPC status.",
            ["upstream", "method", "code"], registry=registry,
        )
        self.duration = Histogram(
            "sidecar_request_duration_seconds",
            "Duration of proxied calls as seen by the host, in seconds.",
            ["upstream", "method"], buckets=duration_buckets_s, registry=registry,
        )
        self.transitions = Counter(
            "sidecar_breaker_transitions", "Circuit breaker state changes.",
            ["upstream", "from_state", "to_state"], registry=registry,
        )
        self.rejections = Counter(
            "sidecar_breaker_rejections",
            "Calls rejected by an open (or full half-open) breaker without reaching the upstream.",
            ["upstream"], registry=registry,
        )
        self.fallbacks = Counter(
            "sidecar_fallbacks", "Calls answered by the upstream's fallback.",
            ["upstream"], registry=registry,
        )
        self.overflows = Counter(
            "sidecar_overflow", "Calls refused because the upstream's concurrency limit was hit.",
            ["upstream"], registry=registry,
        )
        self.per_endpoint = PerEndpointRequests(registry)
        """Per-endpoint request series, off until ``per_endpoint.set_enabled(True)``."""
        self.resilience = ResilienceMetrics(registry)

    def declare_upstreams(self, upstreams: Iterable[str]) -> None:
        """Create the per-upstream counters at 0 so ``rate()`` works from the first scrape
        (with the upstreams' configs, a mapping, also the retry and shedding counters)."""
        if isinstance(upstreams, Mapping):
            self.resilience.declare_upstreams(upstreams)
        for name in upstreams:
            self.rejections.labels(name)
            self.fallbacks.labels(name)
            self.overflows.labels(name)


class _CallMetrics:
    """Cached label children for one (upstream, method): no label lookup per call."""

    __slots__ = (
        "_codes",
        "_method",
        "_metrics",
        "_ok",
        "_upstream",
        "duration",
        "fallbacks",
        "latency",
        "overflows",
        "per_endpoint",
        "rejections",
        "resilience",
    )

    def __init__(self, metrics: SidecarMetrics, upstream: str, method: str) -> None:
        self._metrics = metrics
        self._upstream = upstream
        self._method = method
        self.per_endpoint = metrics.per_endpoint
        self.duration = metrics.duration.labels(upstream, method)
        self.latency = LatencyBuckets(self.duration)  # observe() without an exemplar
        self.rejections = metrics.rejections.labels(upstream)
        self.fallbacks = metrics.fallbacks.labels(upstream)
        self.overflows = metrics.overflows.labels(upstream)
        self.resilience: UpstreamResilience = metrics.resilience.for_upstream(upstream)
        self._codes: dict[grpc.StatusCode, Incrementable] = {}
        self._ok: Incrementable | None = None  # bound at the first OK: no series before it

    def requests(self, code: grpc.StatusCode) -> Incrementable:
        """What to ``inc(1)`` for a call that ended with ``code``."""
        if code is _OK and self._ok is not None:  # the common case, without hashing an enum
            return self._ok
        value = self._codes.get(code)
        if value is None:
            value = counter_value(
                self._metrics.requests.labels(self._upstream, self._method, code.name))
            self._codes[code] = value
        if code is _OK:
            self._ok = value
        return value

    def endpoint_requests(self, endpoint: str, code: grpc.StatusCode) -> None:
        self.per_endpoint.count(self._upstream, endpoint, code)


class _MetricsScope:
    """Per-call scope: counts what the proxy reports. Its own context manager (one allocation)."""

    __slots__ = ("_call", "_endpoint", "_finished", "_hedged")

    def __init__(self, call: _CallMetrics) -> None:
        self._call = call
        self._finished = False
        self._endpoint: str | None = None
        self._hedged = 0
        """Bit n set: attempt n is a hedge (its outcome is counted when it ends)."""

    def __enter__(self) -> _MetricsScope:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self._finished:  # the proxy failed before reporting a status: count it anyway
            self._call.requests(grpc.StatusCode.UNKNOWN).inc(1)
            if self._endpoint is not None:
                self._call.endpoint_requests(self._endpoint, grpc.StatusCode.UNKNOWN)

    def outgoing_metadata(self, metadata: list[tuple[str, str | bytes]]) -> None:
        pass

    def rejected(self, reason: str, retry_after_ms: int) -> None:
        self._call.rejections.inc()

    def fallback(self, kind: str, target: str) -> None:
        self._call.fallbacks.inc()

    def overflow(self) -> None:
        self._call.overflows.inc()

    def attempt_started(self, attempt: int, address: str, hedge: bool) -> None:
        if hedge:
            self._hedged |= 1 << attempt

    def attempt_ended(self, attempt: int, code: grpc.StatusCode | None,
                      duration_s: float, outcome: str) -> None:
        if self._hedged >> attempt & 1:
            self._hedged &= ~(1 << attempt)
            resilience = self._call.resilience
            (resilience.hedges_won if outcome == "committed" else resilience.hedges_lost).inc()

    def retry(self, reason: str, delay_s: float) -> None:
        self._call.resilience.retried(reason)

    def retry_refused(self, reason: str) -> None:
        if reason == "budget":
            self._call.resilience.budget_refused()

    def hedge(self, attempt: int) -> None:
        pass  # counted by outcome when the hedged attempt ends

    def shed(self, limit: int, in_flight: int) -> None:
        self._call.resilience.load_shed.inc()

    def endpoint(self, address: str) -> None:
        # per-endpoint series only with metrics.per_endpoint (bounded cardinality); the last
        # attempt's endpoint is the one the final status is counted under
        if self._call.per_endpoint.enabled:
            self._endpoint = address

    def finish(self, code: grpc.StatusCode, duration_s: float,
               span: trace.Span | None = None) -> None:
        """``span``: the call's span when the caller knows it is the current one (saves the
        context lookup); by default the current span gives the exemplar."""
        self._finished = True
        call = self._call
        call.requests(code).inc(1)
        if self._endpoint is not None:
            call.endpoint_requests(self._endpoint, code)
        span_context = (trace.get_current_span() if span is None else span).get_span_context()
        if span_context.trace_flags & _SAMPLED:
            call.duration.observe(duration_s, {
                "trace_id": format(span_context.trace_id, "032x"),
                "span_id": format(span_context.span_id, "016x"),
            })
        else:
            call.latency.observe(duration_s)


class MetricsObserver:
    """A proxy ``CallObserver`` counting requests, latency, rejections, fallbacks, overflows.

    Place it after the tracing observer so the call's span is current when ``finish`` runs
    (that is where the exemplar's trace id comes from). Never blocks.
    """

    def __init__(self, metrics: SidecarMetrics,
                 max_methods_per_upstream: int = DEFAULT_MAX_METHODS_PER_UPSTREAM) -> None:
        if max_methods_per_upstream < 1:
            raise ValueError(
                f"max_methods_per_upstream must be >= 1, got {max_methods_per_upstream}")
        self._metrics = metrics
        self._max_methods = max_methods_per_upstream
        self._calls: dict[tuple[str, str], _CallMetrics] = {}
        self._methods_per_upstream: dict[str, int] = {}
        self._lock = threading.Lock()

    def start_call(self, info: CallInfo) -> _MetricsScope:
        call = self._calls.get((info.upstream, info.method))
        if call is None:
            call = self._new_call(info.upstream, info.method)
        return _MetricsScope(call)

    def _new_call(self, upstream: str, method: str) -> _CallMetrics:
        with self._lock:
            call = self._calls.get((upstream, method))
            if call is not None:
                return call
            if not upstream:
                label_upstream, label_method = UNROUTED, UNROUTED
            else:
                label_upstream, label_method = upstream, method
                seen = self._methods_per_upstream.get(upstream, 0)
                if seen >= self._max_methods:
                    label_method = OTHER_METHOD
                else:
                    self._methods_per_upstream[upstream] = seen + 1
            call = _CallMetrics(self._metrics, label_upstream, label_method)
            if label_method != OTHER_METHOD:  # keep the cache bounded too
                self._calls[(upstream, method)] = call
            return call


class MetricsBreakerListener(BreakerListener):
    """Counts breaker state changes in ``sidecar_breaker_transitions_total``. Never blocks."""

    def __init__(self, metrics: SidecarMetrics) -> None:
        self._transitions = metrics.transitions

    def on_transition(self, transition: Transition) -> None:
        self._transitions.labels(
            transition.breaker, transition.from_state.value, transition.to_state.value
        ).inc()


class BreakerCollector(Collector):
    """Breaker state and open duration, read from the breakers' views at scrape time.

    ``views`` is called on the scrape thread and must be safe to call from any thread
    (``CircuitBreaker.view()`` is). It is a callable, not a list, so breakers added or removed
    by a config reload show up at the next scrape.

    Example::

        registry.register(BreakerCollector(lambda: [b.view() for b in app.breakers()]))
    """

    def __init__(self, views: Callable[[], Iterable[BreakerView]]) -> None:
        self._views = views

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self._views()))

    @staticmethod
    def _families(views: Iterable[BreakerView] = ()) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "sidecar_breaker_state",
            "Circuit breaker state: 1 for the current state, 0 for the others.",
            labels=["upstream", "state"],
        )
        open_duration = GaugeMetricFamily(
            "sidecar_breaker_open_duration_seconds",
            "Open duration of the current OPEN period, or (when not open) the duration the next "
            "trip would get before jitter; it grows with the trip streak.",
            labels=["upstream"],
        )
        for view in views:
            for candidate in _STATES:
                state.add_metric([view.name, candidate.value],
                                 1.0 if view.state is candidate else 0.0)
            open_duration.add_metric([view.name], view.open_duration_s)
        yield state
        yield open_duration


class MetricsServer:
    """Serves a registry over HTTP on ``HOST:PORT`` (``/metrics``; text or OpenMetrics by the
    ``Accept`` header) from a daemon thread. ``port`` is the bound port (useful with port 0)."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.host, self.port = server.server_address[0], int(server.server_address[1])

    @classmethod
    def start(
        cls,
        address: str,
        registry: CollectorRegistry,
        *,
        certfile: str | None = None,
        keyfile: str | None = None,
    ) -> MetricsServer:
        """Bind and start serving (HTTPS with ``certfile`` + ``keyfile``); raises ``OSError``
        when the address is taken or a PEM file is unreadable, ``ssl.SSLError`` when it is bad.

        Turns off the ``*_created`` series process-wide (one per counter and histogram child:
        they double the series count and no dashboard uses them)."""
        disable_created_metrics()  # type: ignore[no-untyped-call]
        host, _, port = address.rpartition(":")
        server, thread = start_http_server(
            int(port), addr=host.strip("[]"), registry=registry, certfile=certfile, keyfile=keyfile
        )
        return cls(server, thread)

    def close(self) -> None:
        """Stop serving and release the port. Blocks until the serving thread ends."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)
