"""sidecar.resilience.limits: the adaptive concurrency limit of an upstream.

Pure logic (stdlib only; clock and randomness injected). An algorithm moves the limit from
each call's RTT (:class:`Gradient2Limit`, the default, or :class:`VegasLimit`); the
:class:`AdaptiveLimiter` admits calls under it, sheds the rest at once (nothing queues) and tells
:class:`~sidecar.resilience.SheddingListener` s when a shedding period starts and stops.

Public surface::

    LimitSettings     algorithm, initial_limit, min_limit, smoothing, tolerance, long_window,
                      quiet_ms (every default of upstreams.NAME.adaptive_concurrency)
    AdaptiveLimiter   try_acquire() -> bool, release(rtt_s, dropped), release_ignored(), poll(),
                      reconfigure(settings, ceiling), close(); limit, in_flight, shed_total,
                      shedding, algorithm, upstream
    Gradient2Limit    VegasLimit: update(rtt_s, in_flight, dropped) -> limit

Example::

    from sidecar.resilience.limits import AdaptiveLimiter, LimitSettings

    limiter = AdaptiveLimiter(LimitSettings(), upstream="payments", ceiling=1000)
    if limiter.try_acquire():
        limiter.release(0.020, dropped=False)
"""

from sidecar.resilience.limits._gradient2 import Gradient2Limit
from sidecar.resilience.limits._limiter import AdaptiveLimiter, LimitAlgorithm, new_algorithm
from sidecar.resilience.limits._settings import ALGORITHMS, Algorithm, LimitSettings
from sidecar.resilience.limits._vegas import VegasLimit

__all__ = [
    "ALGORITHMS",
    "AdaptiveLimiter",
    "Algorithm",
    "Gradient2Limit",
    "LimitAlgorithm",
    "LimitSettings",
    "VegasLimit",
    "new_algorithm",
]
