"""Outlier detection for one endpoint (Envoy's model): the counts, the rules, the ejection time.

Pure bookkeeping on the balancer's clock (seconds); the :class:`Balancer` decides whether an
ejection the rules ask for is allowed (``max_ejection_percent``) and tells listeners.

Time, never call counts, drives everything that decays:

- the failure-rate counts belong to the endpoint's current ``interval_ms`` period and start
  over when a new period begins (periods are aligned to when the endpoint joined the set or
  came back from an ejection);
- ``ejections_in_a_row`` falls by one per ``interval_ms`` the endpoint spends in service
  without an ejection, computed lazily when it is read, so a thousand failures within a
  millisecond never decay it.

Threading rules: none needed; the balancer that owns it runs on one event loop.
"""

from __future__ import annotations

import math

from sidecar.balancer._settings import OutlierSettings
from sidecar.balancer._types import CONSECUTIVE_FAILURES, FAILURE_RATE


def ejection_ms(outlier: OutlierSettings, ejections_in_a_row: int) -> float:
    """``base_ejection_ms * ejections_in_a_row``, capped at ``max_ejection_ms``."""
    return min(outlier.base_ejection_ms * ejections_in_a_row, outlier.max_ejection_ms)


def ejection_limit(endpoints: int, max_ejection_percent: float) -> int:
    """How many of ``endpoints`` may be ejected at once: floor(n * pct / 100), and never all."""
    limit = math.floor(endpoints * max_ejection_percent / 100.0 + 1e-9)
    return max(0, min(limit, endpoints - 1))


class OutlierState:
    """One endpoint's outlier counts and ejection state. O(1) per call, no allocation."""

    __slots__ = (
        "consecutive",
        "decay_from",
        "ejected_at",
        "ejected_until",
        "in_a_row",
        "interval_calls",
        "interval_failures",
        "interval_start",
    )

    def __init__(self, now: float) -> None:
        self.consecutive = 0
        self.interval_start = now
        self.interval_calls = 0
        self.interval_failures = 0
        self.in_a_row = 0
        self.decay_from = now  # in service since (for the in-a-row decay)
        self.ejected_at = 0.0
        self.ejected_until: float | None = None  # None: in service

    @property
    def ejected(self) -> bool:
        return self.ejected_until is not None

    def record(self, failed: bool, now: float, outlier: OutlierSettings) -> str | None:
        """Count one outcome; return the rule that asks for an ejection, or None.

        The counts keep going whether or not the ejection then happens, so an endpoint whose
        ejection was refused (``max_ejection_percent``) is ejected at its next outcome once
        allowed.
        """
        interval_s = outlier.interval_ms / 1000.0
        if now - self.interval_start >= interval_s:
            periods = math.floor((now - self.interval_start) / interval_s)
            self.interval_start += periods * interval_s
            self.interval_calls = self.interval_failures = 0
        self.interval_calls += 1
        if failed:
            self.interval_failures += 1
            self.consecutive += 1
            threshold = outlier.consecutive_failures
            if threshold is not None and self.consecutive >= threshold:
                return CONSECUTIVE_FAILURES
        else:
            self.consecutive = 0
        rate = outlier.failure_rate
        if (
            rate is not None
            and self.interval_failures
            and self.interval_calls >= outlier.minimum_calls
            and self.interval_failures >= rate * self.interval_calls
        ):
            return FAILURE_RATE
        return None

    @property
    def interval_rate(self) -> float:
        """Failures / calls in the current interval (0.0 when it has no calls)."""
        if not self.interval_calls:
            return 0.0
        return self.interval_failures / self.interval_calls

    def in_a_row_at(self, now: float, interval_ms: float) -> int:
        """``ejections_in_a_row`` after the decay earned in service up to ``now`` (applied)."""
        if self.ejected_until is None and self.in_a_row:
            interval_s = interval_ms / 1000.0
            steps = math.floor((now - self.decay_from) / interval_s)
            if steps > 0:
                if steps >= self.in_a_row:
                    self.in_a_row = 0
                    self.decay_from = now
                else:
                    self.in_a_row -= steps
                    self.decay_from += steps * interval_s
        return self.in_a_row

    def eject(self, now: float, outlier: OutlierSettings) -> float:
        """Take the endpoint out of service; return the ejection time in seconds."""
        self.in_a_row = self.in_a_row_at(now, outlier.interval_ms) + 1
        duration_s = ejection_ms(outlier, self.in_a_row) / 1000.0
        self.ejected_at = now
        self.ejected_until = now + duration_s
        return duration_s

    def come_back(self, at: float) -> float:
        """Back in service from ``at``; return how long it was out. Counts start over."""
        out_for = max(0.0, at - self.ejected_at)
        self.ejected_until = None
        self.consecutive = 0
        self.interval_calls = self.interval_failures = 0
        self.interval_start = at
        self.decay_from = at
        return out_for
