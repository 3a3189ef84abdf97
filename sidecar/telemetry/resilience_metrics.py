"""Prometheus metrics of retries, hedging and the concurrency limit (names and labels are a
contract: docs/observability.md).

=============================================  =====================================  =========
metric                                         labels                                 kind
=============================================  =====================================  =========
``sidecar_retries_total``                      upstream, reason                       counter
``sidecar_retry_budget_exhausted_total``       upstream                               counter
``sidecar_hedges_total``                       upstream, outcome                      counter
``sidecar_load_shed_total``                    upstream                               counter
``sidecar_concurrency_limit``                  upstream                               gauge (*)
``sidecar_concurrency_in_flight``              upstream                               gauge (*)
=============================================  =====================================  =========

(*) read at scrape time from the live upstreams (:class:`ConcurrencyCollector`): the adaptive
limit when ``adaptive_concurrency`` is on, else ``max_concurrent_requests``; in flight is what
the upstream's bulkhead holds now.

``reason`` of a retry is the status that made the attempt fail (``UNAVAILABLE``...) or
``per_try_timeout``; a hedge is not a retry. ``outcome`` of a hedge is ``won`` (its answer was
the one the caller got) or ``lost`` (cancelled, or failed, while another attempt answered).
A retry or hedge the budget refused counts in ``sidecar_retry_budget_exhausted_total`` and is
logged, rate-limited (:class:`~sidecar.loud.LoudLimiter`: the first refusal of an
upstream at once, then at most one WARNING line per 10 s carrying how many it stands for,
``event="retry_budget_exhausted"``), never a line per call.

Every counter starts at 0 for each configured upstream (retries: for each of its retryable
codes, and ``per_try_timeout`` when ``per_try_timeout_ms`` is set), so ``rate()`` works from the
first scrape.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sidecar.loud import LoudLimiter

if TYPE_CHECKING:
    from sidecar.config import UpstreamConfig
    from sidecar.protection import WatchedUpstream

__all__ = ["HEDGE_OUTCOMES", "ConcurrencyCollector", "ResilienceMetrics", "UpstreamResilience"]

HEDGE_OUTCOMES: Final = ("won", "lost")
DEFAULT_RETRY_REASONS: Final = ("UNAVAILABLE",)
"""Retry reasons declared for an upstream without ``retry`` (hedging's default non-fatal code)."""
PER_TRY_TIMEOUT_REASON: Final = "per_try_timeout"
EVENT_BUDGET_EXHAUSTED: Final = "retry_budget_exhausted"
BUDGET_LOG_INTERVAL_S: Final = 10.0
"""At most one budget-refusal line per upstream this often (the first is logged at once)."""


class ResilienceMetrics:
    """The retry, hedge and shedding counters, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry, *,
                 logger: logging.Logger | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger or logging.getLogger("sidecar.proxy")
        self._clock = clock
        self._budget_logs: dict[str, LoudLimiter] = {}
        self._lock = threading.Lock()
        self.retries = Counter(
            "sidecar_retries", "Attempts retried after a failure, by upstream and the failure.",
            ["upstream", "reason"], registry=registry,
        )
        self.budget_exhausted = Counter(
            "sidecar_retry_budget_exhausted",
            "Retries and hedges not sent because the upstream's retry budget was spent.",
            ["upstream"], registry=registry,
        )
        self.hedges = Counter(
            "sidecar_hedges", "Hedged attempts sent, by whether their answer won.",
            ["upstream", "outcome"], registry=registry,
        )
        self.load_shed = Counter(
            "sidecar_load_shed",
            "Calls shed at once because the upstream's adaptive concurrency limit was reached.",
            ["upstream"], registry=registry,
        )

    def declare_upstreams(self, upstreams: Mapping[str, UpstreamConfig]) -> None:
        """Create every known series at 0 (see the module docstring)."""
        for name, config in upstreams.items():
            for reason in _retry_reasons(config):
                self.retries.labels(name, reason)
            self.budget_exhausted.labels(name)
            for outcome in HEDGE_OUTCOMES:
                self.hedges.labels(name, outcome)
            self.load_shed.labels(name)

    def for_upstream(self, upstream: str) -> UpstreamResilience:
        return UpstreamResilience(self, upstream)

    def budget_log(self, upstream: str) -> LoudLimiter:
        """The upstream's rate-limited budget-refusal line (one per upstream, shared by its
        calls so the limit holds across methods)."""
        with self._lock:
            limiter = self._budget_logs.get(upstream)
            if limiter is None:
                limiter = self._budget_logs[upstream] = LoudLimiter(
                    self._logger,
                    f"upstream {upstream}: retry budget exhausted, retries and hedges not sent",
                    level=logging.WARNING, interval_s=BUDGET_LOG_INTERVAL_S, clock=self._clock)
            return limiter


def _retry_reasons(config: UpstreamConfig) -> tuple[str, ...]:
    retry = config.retry
    if retry is None:
        return DEFAULT_RETRY_REASONS
    reasons = tuple(retry.retryable_codes)
    return (*reasons, PER_TRY_TIMEOUT_REASON) if retry.per_try_timeout_ms else reasons


class UpstreamResilience:
    """Cached label children of one upstream, for the per-call metrics scope."""

    __slots__ = ("_budget_log", "_metrics", "_reasons", "_upstream", "budget_exhausted",
                 "hedges_lost", "hedges_won", "load_shed")

    def __init__(self, metrics: ResilienceMetrics, upstream: str) -> None:
        self._metrics = metrics
        self._upstream = upstream
        self._reasons: dict[str, Counter] = {}
        self.budget_exhausted = metrics.budget_exhausted.labels(upstream)
        self.hedges_won = metrics.hedges.labels(upstream, "won")
        self.hedges_lost = metrics.hedges.labels(upstream, "lost")
        self.load_shed = metrics.load_shed.labels(upstream)
        self._budget_log = metrics.budget_log(upstream)

    def budget_refused(self) -> None:
        """A retry or hedge the budget refused: counted, and logged rate-limited."""
        self.budget_exhausted.inc()
        self._budget_log.hit(extra={"event": EVENT_BUDGET_EXHAUSTED, "upstream": self._upstream})

    def retried(self, reason: str) -> None:
        child = self._reasons.get(reason)
        if child is None:
            child = self._reasons[reason] = self._metrics.retries.labels(self._upstream, reason)
        child.inc()


class ConcurrencyCollector(Collector):
    """``sidecar_concurrency_limit`` and ``sidecar_concurrency_in_flight`` of the live upstreams,
    read on the scrape thread (plain attribute reads, no lock held by the data path)."""

    def __init__(self, upstreams: Callable[[], Mapping[str, WatchedUpstream]]) -> None:
        self._upstreams = upstreams

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        limit = GaugeMetricFamily(
            "sidecar_concurrency_limit",
            "Calls the upstream admits at once: the adaptive limit, else max_concurrent_requests.",
            labels=["upstream"])
        in_flight = GaugeMetricFamily(
            "sidecar_concurrency_in_flight", "Calls the upstream has in flight now.",
            labels=["upstream"])
        for name, upstream in sorted(self._upstreams().items()):
            guard = upstream.guard
            # getattr: an upstream guard without an adaptive limiter has no such attribute
            limiter = getattr(guard, "limiter", None)
            limit.add_metric([name], float(limiter.limit if limiter is not None
                                           else guard.bulkhead.limit))
            in_flight.add_metric([name], float(guard.bulkhead.in_flight))
        yield limit
        yield in_flight
