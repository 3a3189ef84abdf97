"""The adaptive limiter of one upstream: admits calls under the algorithm's limit, sheds the
rest at once, and tells listeners when a shedding period starts and stops.

Hysteresis: a period starts with the first call shed (``started``) and stops once no call was
shed for ``quiet_ms`` (``stopped``, with the calls shed and the period's length, from the first
shed call to ``quiet_ms`` after the last). The stop is noticed on the next
:meth:`~AdaptiveLimiter.try_acquire` / :meth:`~AdaptiveLimiter.release`, or by
:meth:`~AdaptiveLimiter.poll`, which the proxy calls from a timer so a period ends even when the
traffic stops with it. One overload is one started/stopped pair, not one event per call.

Threading: every method takes a short ``threading.Lock`` (O(1) work under it), so the sync
interceptors may call from any thread. Listeners are called after the lock is released, on the
caller's thread, synchronously; they must not block. A listener that raises is logged and the
others still hear the change.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from sidecar.resilience._types import SheddingChange, SheddingListener, SheddingPhase
from sidecar.resilience.limits._gradient2 import Gradient2Limit
from sidecar.resilience.limits._settings import Algorithm, LimitSettings
from sidecar.resilience.limits._vegas import VegasLimit

__all__ = ["AdaptiveLimiter", "LimitAlgorithm", "new_algorithm"]

_log = logging.getLogger("sidecar.resilience.limits")


class LimitAlgorithm(Protocol):
    """One way of moving the limit (:class:`Gradient2Limit`, :class:`VegasLimit`)."""

    @property
    def name(self) -> str: ...

    @property
    def limit(self) -> int: ...

    @property
    def estimate(self) -> float: ...

    def update(self, rtt_s: float, in_flight: int, dropped: bool,
               saturated: bool | None = None, samples: int = 1) -> int: ...

    def reconfigure(self, settings: LimitSettings, max_limit: int) -> None: ...


def new_algorithm(settings: LimitSettings, ceiling: int, start: float | None = None,
                  rng: random.Random | None = None) -> LimitAlgorithm:
    """The algorithm ``settings.algorithm`` names, bounded by ``ceiling``."""
    name: Algorithm = settings.algorithm
    if name == "vegas":
        return VegasLimit(settings, ceiling, start, rng)
    return Gradient2Limit(settings, ceiling, start)


class _SampleWindow:
    """Calls measured since the algorithm last moved the limit: it moves once per window (at
    least ``window_samples`` calls over at least ``window_ms``), on the window's mean RTT, the
    most calls in flight, and whether any call was dropped or the limit was reached. A single
    call's RTT is too noisy to steer by: per call, the limit swings around the capacity."""

    __slots__ = ("count", "dropped", "max_in_flight", "saturated", "started", "sum_rtt_s")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.count = 0
        self.sum_rtt_s = 0.0
        self.max_in_flight = 0
        self.dropped = False
        self.saturated = False
        self.started = 0.0

    def add(self, now: float, rtt_s: float, in_flight: int, dropped: bool,
            saturated: bool) -> None:
        if not self.count:
            self.started = now
        self.count += 1
        self.sum_rtt_s += rtt_s
        self.max_in_flight = max(self.max_in_flight, in_flight)
        self.dropped = self.dropped or dropped
        self.saturated = self.saturated or saturated

    @property
    def mean_rtt_s(self) -> float:
        return self.sum_rtt_s / self.count if self.count else 0.0


class AdaptiveLimiter:
    """See the module docstring. ``ceiling`` is the upstream's ``max_concurrent_requests``:
    the limit never goes above it.

    Example::

        limiter = AdaptiveLimiter(LimitSettings(), upstream="payments", ceiling=1000,
                                  listeners=[my_listener])
        if limiter.try_acquire():
            try:
                ...  # the call; rtt_s measured
            finally:
                limiter.release(rtt_s, dropped=False)
        else:
            ...  # shed: answer RESOURCE_EXHAUSTED at once
    """

    __slots__ = ("_algorithm", "_clock", "_in_flight", "_last_shed_at", "_listeners", "_lock",
                 "_period_shed", "_period_start", "_rng", "_shed_total", "_shedding",
                 "_window", "ceiling", "settings", "upstream")

    def __init__(self, settings: LimitSettings, *, upstream: str, ceiling: int,
                 clock: Callable[[], float] = time.monotonic,
                 listeners: Sequence[SheddingListener] = (),
                 rng: random.Random | None = None) -> None:
        """``listeners`` is kept by reference (a list the owner appends to later is heard)."""
        if ceiling < 1:
            raise ValueError(f"ceiling: must be >= 1, got {ceiling}")
        settings.check_ceiling(ceiling)
        self.settings = settings
        self.upstream = upstream
        self.ceiling = ceiling
        self._clock = clock
        self._listeners = listeners
        self._rng = rng
        self._algorithm = new_algorithm(settings, ceiling, rng=rng)
        self._lock = threading.Lock()
        self._in_flight = 0
        self._shed_total = 0
        self._shedding = False
        self._period_start = 0.0
        self._period_shed = 0
        self._last_shed_at = 0.0
        self._window = _SampleWindow()

    # --- what telemetry and the admin API read -----------------------------------------------

    @property
    def limit(self) -> int:
        """The limit in force now."""
        return self._algorithm.limit

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def shed_total(self) -> int:
        """Calls shed since the limiter was made (it lives as long as its upstream)."""
        return self._shed_total

    @property
    def shedding(self) -> bool:
        """A shedding period is open."""
        return self._shedding

    @property
    def algorithm(self) -> str:
        """``gradient2`` or ``vegas``."""
        return self._algorithm.name

    @property
    def limit_algorithm(self) -> LimitAlgorithm:
        """The algorithm object itself (its estimate and RTT baselines, for diagnostics)."""
        return self._algorithm

    # --- the data path -----------------------------------------------------------------------

    def try_acquire(self) -> bool:
        """Admit one call (True: call :meth:`release` or :meth:`release_ignored` once when it
        ends) or shed it (False: answer at once; counted in ``shed_total``)."""
        with self._lock:
            now = self._clock()
            changes = self._end_quiet_period(now)
            if self._in_flight < self._algorithm.limit:
                self._in_flight += 1
                admitted = True
            else:
                admitted = False
                self._shed_total += 1
                self._last_shed_at = now
                if not self._shedding:
                    self._shedding = True
                    self._period_start = now
                    self._period_shed = 1
                    changes.append(self._change("started", 0.0))
                else:
                    self._period_shed += 1
        self._tell(changes)
        return admitted

    def release(self, rtt_s: float, dropped: bool) -> None:
        """An admitted call ended after ``rtt_s``; ``dropped``: it ended by overload or timeout
        (the upstream's RESOURCE_EXHAUSTED, or DEADLINE_EXCEEDED)."""
        with self._lock:
            in_flight = self._in_flight
            self._in_flight = max(0, in_flight - 1)
            saturated = self._shedding or in_flight >= self._algorithm.limit
            now = self._clock()
            window = self._window
            window.add(now, rtt_s, in_flight, dropped, saturated)
            settings = self.settings
            if (window.count >= settings.window_samples
                    and now - window.started >= settings.window_ms / 1000.0):
                self._algorithm.update(window.mean_rtt_s, window.max_in_flight, window.dropped,
                                       window.saturated, window.count)
                window.clear()
            changes = self._end_quiet_period(now)
        self._tell(changes)

    def release_ignored(self) -> None:
        """An admitted call ended without a measure worth learning (the caller cancelled, or
        an error that says nothing about load): only its slot is freed."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            changes = self._end_quiet_period(self._clock())
        self._tell(changes)

    def poll(self) -> None:
        """End a shedding period that has been quiet for ``quiet_ms`` (call from a timer)."""
        if not self._shedding:
            return
        with self._lock:
            changes = self._end_quiet_period(self._clock())
        self._tell(changes)

    # --- reload and removal ------------------------------------------------------------------

    def reconfigure(self, settings: LimitSettings, ceiling: int) -> None:
        """Apply reloaded settings. The calls in flight, the shed count and an open period
        carry over; the same algorithm keeps its estimate (clamped into the new bounds), a
        different one starts from the limit in force now."""
        if ceiling < 1:
            raise ValueError(f"ceiling: must be >= 1, got {ceiling}")
        settings.check_ceiling(ceiling)
        with self._lock:
            if settings.algorithm == self._algorithm.name:
                self._algorithm.reconfigure(settings, ceiling)
            else:
                self._algorithm = new_algorithm(settings, ceiling,
                                                start=self._algorithm.estimate, rng=self._rng)
            self.settings = settings
            self.ceiling = ceiling

    def close(self) -> None:
        """The upstream no longer has an adaptive limit: end an open period now."""
        with self._lock:
            changes: list[SheddingChange] = []
            if self._shedding:
                self._shedding = False
                changes.append(self._change("stopped", self._clock() - self._period_start))
        self._tell(changes)

    # --- internals ---------------------------------------------------------------------------

    def _end_quiet_period(self, now: float) -> list[SheddingChange]:
        quiet_s = self.settings.quiet_ms / 1000.0
        if self._shedding and now - self._last_shed_at >= quiet_s:
            self._shedding = False
            duration = self._last_shed_at + quiet_s - self._period_start
            return [self._change("stopped", duration)]
        return []

    def _change(self, phase: SheddingPhase, duration_s: float) -> SheddingChange:
        return SheddingChange(
            upstream=self.upstream,
            phase=phase,
            limit=self._algorithm.limit,
            in_flight=self._in_flight,
            shed=self._period_shed,
            algorithm=self._algorithm.name,
            duration_s=duration_s,
        )

    def _tell(self, changes: list[SheddingChange]) -> None:
        for change in changes:
            for listener in self._listeners:
                try:
                    listener.on_shedding(change)
                except Exception:
                    _log.exception("shedding listener %r failed on %s", listener, change.phase)
