"""Gradient2: the limit follows the ratio of the long-window RTT to the latest RTT.

After Netflix concurrency-limits' ``Gradient2Limit`` (our own code). Each measured call gives a
short RTT (the call's own) and moves a long-window RTT (an EWMA over ``long_window`` calls). While
calls are as fast as the long-window RTT allows (``tolerance``), the gradient is 1 and the limit
grows by a headroom of ``sqrt(limit)``; when they get slower, queueing has begun somewhere and the
limit falls in proportion::

    gradient = clamp(tolerance * long_rtt / short_rtt, 0.5, 1.0)
    estimate = limit * gradient + sqrt(limit)
    limit    = limit * (1 - smoothing) + estimate * smoothing,   within [min_limit, max_limit]

Two guards against the long-window RTT drifting away from "no queueing":

- **Down** (as Netflix): when the long RTT is more than twice the short one (load has passed,
  calls are fast again), it is cut by 5 % per call rather than waiting for the EWMA.
- **Up** (ours): while the limit is saturated (as many calls in flight as the limit allows), the
  long RTT does not rise. Every call then waits in a queue the limit itself allows, so its RTT
  says nothing about the upstream's unloaded speed; learning from it would walk the baseline up
  to the overloaded RTT and the limit up to the ceiling (Netflix's Gradient2 does exactly that
  under a sustained overload). While the limit is at most ``2 x min_limit`` every call is
  learned anyway: that is where the limit falls to when the upstream really got slower for
  good (every call then looks like queueing), the RTT at so little concurrency is the best
  unloaded measure there is, and the new speed is followed from there.

A call that was dropped (the upstream said RESOURCE_EXHAUSTED or the deadline passed) counts as
the steepest gradient (0.5) and its RTT, a timeout rather than a latency, is not learned.

While fewer than half the limit's calls are in flight the limit stays put (the caller, not the
upstream, is the bottleneck; a limit grown then would mean nothing); a drop lowers it even so.

Pure: no clock, no I/O; O(1) per call. Not thread-safe on its own (the limiter holds a lock).
"""

from __future__ import annotations

import math
from typing import Final

from sidecar.resilience.limits._settings import LimitSettings

__all__ = ["Gradient2Limit"]

WARMUP_SAMPLES: Final = 10
"""The long-window RTT is a plain mean over the first samples (an EWMA from 0 would lie)."""
MIN_GRADIENT: Final = 0.5
"""The limit falls by at most half an estimate per call (one slow outlier is not an overload)."""
DRIFT_RATIO: Final = 2.0
"""Long RTT above this many short RTTs: the load has passed, cut the long RTT quickly."""
DRIFT_DECAY: Final = 0.95
LOW_LIMIT: Final = 2
"""While the limit is at most this many times ``min_limit``, every call is learned (the up
guard never holds them back)."""


class Gradient2Limit:
    """See the module docstring. ``update`` takes one measured call; ``limit`` is the integer
    limit in force.

    Example::

        limit = Gradient2Limit(LimitSettings(), max_limit=1000)
        limit.update(rtt_s=0.021, in_flight=18, dropped=False)
    """

    name: Final = "gradient2"

    __slots__ = ("_estimate", "_factor", "_long_rtt_s", "_samples", "_sum_s", "max_limit",
                 "settings")

    def __init__(self, settings: LimitSettings, max_limit: int, start: float | None = None
                 ) -> None:
        """``start``: begin from this limit (e.g. the previous algorithm's) instead of
        ``initial_limit``."""
        self.settings = settings
        self.max_limit = max_limit
        first = settings.initial_limit if start is None else start
        self._estimate = float(min(max(first, settings.min_limit), max_limit))
        self._factor = 2.0 / (settings.long_window + 1)
        self._long_rtt_s = 0.0
        self._samples = 0
        self._sum_s = 0.0

    @property
    def limit(self) -> int:
        return int(self._estimate)

    @property
    def estimate(self) -> float:
        """The limit before rounding down."""
        return self._estimate

    @property
    def long_rtt_s(self) -> float:
        """The long-window RTT (0 before the first sample)."""
        return self._long_rtt_s

    def reconfigure(self, settings: LimitSettings, max_limit: int) -> None:
        """New knobs; the estimate and the long RTT carry over (clamped into the new bounds)."""
        self.settings = settings
        self.max_limit = max_limit
        self._factor = 2.0 / (settings.long_window + 1)
        self._estimate = min(max(self._estimate, settings.min_limit), max_limit)

    def update(self, rtt_s: float, in_flight: int, dropped: bool,
               saturated: bool | None = None, samples: int = 1) -> int:
        """One measured call: ``rtt_s`` its RTT, ``in_flight`` the calls in flight when it
        ended (itself included), ``saturated`` whether the limit is being reached (default:
        ``in_flight >= limit``; the limiter also says so while it sheds). Returns the new
        limit."""
        settings = self.settings
        estimate = self._estimate
        short = max(rtt_s, 1e-6)
        if saturated is None:
            saturated = in_flight >= int(estimate)
        if not dropped:
            self._learn(short, saturated, samples)
        long = self._long_rtt_s
        if long / short > DRIFT_RATIO:
            self._long_rtt_s = long * DRIFT_DECAY ** samples
        if in_flight < estimate / 2 and not dropped:
            return int(estimate)  # app-limited: the caller is the bottleneck
        if dropped or long <= 0.0:
            gradient = MIN_GRADIENT if dropped else 1.0
        else:
            gradient = max(MIN_GRADIENT, min(1.0, settings.tolerance * long / short))
        new = estimate * gradient + math.sqrt(estimate)
        new = estimate * (1.0 - settings.smoothing) + new * settings.smoothing
        self._estimate = max(float(settings.min_limit), min(float(self.max_limit), new))
        return int(self._estimate)

    def _learn(self, short: float, saturated: bool, samples: int = 1) -> None:
        """``short`` is the mean RTT of ``samples`` calls: the long window learns it as it
        would learn that many calls one by one."""
        if self._samples < WARMUP_SAMPLES:
            self._samples += samples
            self._sum_s += short * samples
            self._long_rtt_s = self._sum_s / self._samples
            return
        long = self._long_rtt_s
        low = self._estimate <= LOW_LIMIT * self.settings.min_limit
        if short > long and saturated and not low:
            return  # the up guard: see the module docstring
        self._long_rtt_s = long + (short - long) * (1.0 - (1.0 - self._factor) ** samples)
