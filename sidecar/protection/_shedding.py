"""The adaptive concurrency limit on the proxy's side: which limiter an upstream's guard keeps
across reloads, what a call's outcome teaches it, and the timer that ends quiet shedding
periods.

The limiter itself is pure (:mod:`sidecar.resilience.limits`); this module only connects it to
gRPC status codes and the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final

import grpc

from sidecar.resilience import SheddingListener
from sidecar.resilience.limits import AdaptiveLimiter, LimitSettings

__all__ = ["DROPPED_CODES", "POLL_INTERVAL_S", "poll_limiters", "reconfigured_limiter",
           "settle_limiter"]

_log = logging.getLogger("sidecar.proxy")

DROPPED_CODES: Final = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  grpc.StatusCode.DEADLINE_EXCEEDED})
"""An upstream call ending with one of these was dropped by overload: the limit falls."""
POLL_INTERVAL_S: Final = 0.2
"""How often the proxy asks every limiter whether its shedding period has gone quiet."""


def reconfigured_limiter(current: AdaptiveLimiter | None, settings: LimitSettings | None, *,
                         upstream: str, ceiling: int, listeners: Sequence[SheddingListener],
                         clock: Callable[[], float] = time.monotonic) -> AdaptiveLimiter | None:
    """The limiter an upstream has after a (re)load: none without ``adaptive_concurrency``
    (an open period is closed), the same one reconfigured in place (its in-flight calls,
    shed count and period carry over), or a new one."""
    if settings is None:
        if current is not None:
            current.close()
        return None
    if current is None:
        return AdaptiveLimiter(settings, upstream=upstream, ceiling=ceiling, clock=clock,
                               listeners=listeners)
    if current.settings != settings or current.ceiling != ceiling:
        current.reconfigure(settings, ceiling)
    return current


def settle_limiter(limiter: AdaptiveLimiter, code: grpc.StatusCode | None, duration_s: float,
                   failure_codes: frozenset[grpc.StatusCode]) -> None:
    """Free a call's slot and teach its outcome: a dropped call (:data:`DROPPED_CODES`) lowers
    the limit; any other failure or a cancelled call (``code`` None) says nothing about load
    (as Netflix's gRPC limiter ignores them); the rest, OK and caller errors, are RTT
    samples."""
    if code is None:
        limiter.release_ignored()
    elif code in DROPPED_CODES:
        limiter.release(duration_s, dropped=True)
    elif code in failure_codes:
        limiter.release_ignored()
    else:
        limiter.release(duration_s, dropped=False)


async def poll_limiters(limiters: Callable[[], Iterable[AdaptiveLimiter | None]],
                        interval_s: float = POLL_INTERVAL_S) -> None:
    """Forever: every ``interval_s``, end each limiter's shedding period that went quiet (so
    a period ends even when the traffic stopped with it). Cancel to stop."""
    while True:
        await asyncio.sleep(interval_s)
        for limiter in limiters():
            if limiter is not None:
                try:
                    limiter.poll()
                except Exception:
                    _log.exception("adaptive limiter poll failed")
