"""Vegas: the limit follows the queue estimated from the RTT above the no-load RTT.

After Netflix concurrency-limits' ``VegasLimit`` (itself after TCP Vegas; our own code). The
no-load RTT is the lowest RTT seen; the queue is ``limit * (1 - no_load / rtt)``, the calls that
would not be waiting if the upstream ran unloaded. With ``L = log10(limit)`` (at least 1):

- queue <= ``L``: grow fast (``+ 6 L``); queue < ``3 L``: grow (``+ L``);
- queue > ``6 L``, or a dropped call: shrink (``- L``); otherwise hold;

smoothed by ``smoothing``, within [min_limit, max_limit]. Because the no-load RTT only ever goes
down, it is re-probed: after about ``PROBE_MULTIPLIER x limit`` calls (with jitter, so several
sidecars do not probe in step) the next call's RTT becomes the no-load RTT again, so an upstream
that got slower for good is followed. While fewer than half the limit's calls are in flight the
limit stays put (app-limited).

Pure: randomness injected (``rng``), no clock, no I/O; O(1) per call. Not thread-safe on its own.
"""

from __future__ import annotations

import math
import random
from typing import Final

from sidecar.resilience.limits._settings import LimitSettings

__all__ = ["VegasLimit"]

PROBE_MULTIPLIER: Final = 30
PROBE_JITTER: Final = (0.5, 1.0)


def _log10(limit: float) -> int:
    return max(1, int(math.log10(max(limit, 1.0))))


class VegasLimit:
    """See the module docstring.

    Example::

        limit = VegasLimit(LimitSettings(algorithm="vegas"), max_limit=1000)
        limit.update(rtt_s=0.021, in_flight=18, dropped=False)
    """

    name: Final = "vegas"

    __slots__ = ("_estimate", "_jitter", "_no_load_s", "_probe_count", "_rng", "max_limit",
                 "settings")

    def __init__(self, settings: LimitSettings, max_limit: int, start: float | None = None,
                 rng: random.Random | None = None) -> None:
        self.settings = settings
        self.max_limit = max_limit
        first = settings.initial_limit if start is None else start
        self._estimate = float(min(max(first, settings.min_limit), max_limit))
        self._rng = rng if rng is not None else random.Random()
        self._no_load_s = 0.0
        self._probe_count = 0
        self._jitter = self._rng.uniform(*PROBE_JITTER)

    @property
    def limit(self) -> int:
        return int(self._estimate)

    @property
    def estimate(self) -> float:
        return self._estimate

    @property
    def no_load_rtt_s(self) -> float:
        """The lowest RTT seen since the last probe (0 before the first sample)."""
        return self._no_load_s

    def reconfigure(self, settings: LimitSettings, max_limit: int) -> None:
        self.settings = settings
        self.max_limit = max_limit
        self._estimate = min(max(self._estimate, settings.min_limit), max_limit)

    def update(self, rtt_s: float, in_flight: int, dropped: bool,
               saturated: bool | None = None, samples: int = 1) -> int:
        """One measured call (see :meth:`Gradient2Limit.update`; ``saturated`` is unused)."""
        rtt = max(rtt_s, 1e-6)
        self._probe_count += 1
        if self._jitter * PROBE_MULTIPLIER * self._estimate <= self._probe_count:
            self._probe_count = 0
            self._jitter = self._rng.uniform(*PROBE_JITTER)
            self._no_load_s = rtt
            return int(self._estimate)
        if self._no_load_s == 0.0 or rtt < self._no_load_s:
            self._no_load_s = rtt
            return int(self._estimate)
        estimate = self._estimate
        if dropped:
            new = estimate - _log10(estimate)
        elif in_flight * 2 < estimate:
            return int(estimate)
        else:
            log = _log10(estimate)
            queue = math.ceil(estimate * (1.0 - self._no_load_s / rtt))
            if queue <= log:
                new = estimate + 6 * log
            elif queue < 3 * log:
                new = estimate + log
            elif queue > 6 * log:
                new = estimate - log
            else:
                return int(estimate)
        new = max(float(self.settings.min_limit), min(float(self.max_limit), new))
        smoothing = self.settings.smoothing
        self._estimate = estimate * (1.0 - smoothing) + new * smoothing
        return int(self._estimate)
