"""Load estimation, apart from the choice (as linkerd2-proxy's PeakEWMA is apart from its P2C).

:class:`PeakEwma` keeps one endpoint's latency estimate. It is an exponentially weighted moving
average *in time*, not in calls: an observation ``L`` at time ``t`` weighs
``1 - exp(-(t - t_last) / tau)``, so a burst of calls within a millisecond moves the estimate
little and a call after a long silence replaces it almost entirely. Two twists, both Linkerd's:

- Peak sensitivity: an observation above the estimate sets it to ``L`` at once, so an endpoint
  that turns slow is avoided from its next pick on, not after many slow calls.
- Decay on read: :meth:`PeakEwma.value` decays the estimate toward 0 for the time since the
  last observation. An endpoint that got no calls for a few ``tau`` becomes cheap again and is
  re-tried; if it is still slow, the first slow reply puts its estimate back up (peak).

Threading rules: none needed; the balancer that owns it runs on one event loop.
"""

from __future__ import annotations

import math


class PeakEwma:
    """One endpoint's latency estimate in milliseconds, on the balancer's clock (seconds).

    O(1) and allocation-free: one ``exp`` per observation and per read.
    """

    __slots__ = ("estimate_ms", "updated_at")

    def __init__(self, initial_ms: float, now: float) -> None:
        self.estimate_ms = initial_ms
        self.updated_at = now

    def value(self, now: float, tau_s: float) -> float:
        """The estimate as read at ``now``: decayed toward 0 since the last observation."""
        elapsed = now - self.updated_at
        if elapsed <= 0.0:
            return self.estimate_ms
        return self.estimate_ms * math.exp(-elapsed / tau_s)

    def observe(self, latency_ms: float, now: float, tau_s: float) -> None:
        """Fold in one call's latency (peak: a higher latency replaces the estimate at once)."""
        if latency_ms >= self.estimate_ms:
            self.estimate_ms = latency_ms
        else:
            elapsed = now - self.updated_at
            weight = math.exp(-elapsed / tau_s) if elapsed > 0.0 else 1.0
            self.estimate_ms = self.estimate_ms * weight + latency_ms * (1.0 - weight)
        if now > self.updated_at:
            self.updated_at = now

    def reset(self, value_ms: float, now: float) -> None:
        """Start over from ``value_ms`` (a new or returned endpoint gets a fair chance)."""
        self.estimate_ms = value_ms
        self.updated_at = now
