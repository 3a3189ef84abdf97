"""Every breaker of one proxy (or one set of interceptors), by name.

The registry is what lets a reload keep breaker state: a guard asks it for a breaker by name,
and a name that already exists gets its settings updated in place instead of a new breaker.
Listeners (telemetry, events) are attached here once and reach every breaker, present and
future. Threading: one short ``threading.Lock``, so the sync interceptors may call from any
thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence

from sidecar.breaker import BreakerListener, BreakerSettings, CircuitBreaker

__all__ = ["BreakerRegistry"]


class BreakerRegistry:
    """Every breaker of one proxy (or one set of interceptors), by name.

    Attaches the given listeners to each breaker it creates. :meth:`configure` is also the
    reload path: an existing breaker keeps its state and trip streak and only gets new settings
    (``update_settings``); a mode an operator set at runtime (admin ``SetBreakerMode``) survives
    a reload unless the reloaded file changes the configured mode itself.

    Example::

        registry = BreakerRegistry(listeners=[LoggingBreakerListener()])
        breaker = registry.configure("payments", BreakerSettings(failure_rate=0.3))
    """

    def __init__(
        self,
        listeners: Sequence[BreakerListener] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._listeners: list[BreakerListener] = list(listeners)
        self._clock = clock
        self._wall_clock = wall_clock
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def configure(self, name: str, settings: BreakerSettings) -> CircuitBreaker:
        """The breaker called ``name`` with ``settings``: created, or updated in place."""
        with self._lock:
            breaker = self._breakers.get(name)
            if breaker is None:
                breaker = CircuitBreaker(
                    name, settings, clock=self._clock, wall_clock=self._wall_clock
                )
                for listener in self._listeners:
                    breaker.add_listener(listener)
                self._breakers[name] = breaker
                return breaker
        if breaker.settings != settings:
            # Outside the lock: may notify listeners. Keeps state and streak; applies the mode
            # only if the configured mode itself changed (an operator's override survives).
            breaker.update_settings(settings)
        return breaker

    def get(self, name: str) -> CircuitBreaker | None:
        return self._breakers.get(name)

    def names(self) -> list[str]:
        return sorted(self._breakers)

    def breakers(self) -> list[CircuitBreaker]:
        """All breakers, sorted by name."""
        with self._lock:
            return [self._breakers[name] for name in sorted(self._breakers)]

    def discard(self, names: Iterable[str]) -> None:
        """Forget breakers (their upstream left the config or changed address)."""
        with self._lock:
            for name in names:
                self._breakers.pop(name, None)

    def add_listener(self, listener: BreakerListener) -> None:
        """Attach a listener to every existing breaker and every breaker created later."""
        with self._lock:
            self._listeners.append(listener)
            breakers = list(self._breakers.values())
        for breaker in breakers:
            breaker.add_listener(listener)
