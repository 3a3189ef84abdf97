"""sidecar.breaker: the adaptive circuit breaker, pure logic (stdlib only, no I/O, clock injected).

How it judges an upstream, and how to add a trip rule: docs/breaker.md.

Public surface::

    CircuitBreaker      try_acquire() -> Permit | None, record(), release(), set_mode(), view()
    BreakerSettings     every default, validated once
    BreakerListener     on_transition(Transition), on_mode_change(ModeChange)
    State, Mode         closed/open/half_open; enforce/metrics_only/disabled/forced_open
    WindowSnapshot, Transition, ModeChange, BreakerView, Permit
    CountWindow, TimeWindow, SlidingWindow   the windows, usable on their own
    IllegalTransitionError                   a bug in the state machine, never a user error

Example::

    from sidecar.breaker import BreakerSettings, CircuitBreaker

    breaker = CircuitBreaker("payments", BreakerSettings(window_size=50))
    permit = breaker.try_acquire()
    if permit is not None:
        breaker.record(permit, duration_s=0.012, failed=False)

Inside, one module per job: ``_breaker`` (the state machine and its lock), ``_rules`` (the
trip rules it asks in order), ``_window`` (sliding windows), ``_probes`` (HALF_OPEN
probing), ``_streak`` (the trip streak and its decay), ``_state`` (legal transitions, open
durations), ``_listeners`` (fan-out), ``_settings`` and ``_types``.
"""

from sidecar.breaker._breaker import CircuitBreaker
from sidecar.breaker._settings import BreakerSettings
from sidecar.breaker._types import (
    BreakerListener,
    BreakerView,
    IllegalTransitionError,
    Mode,
    ModeChange,
    Permit,
    State,
    Transition,
    WindowSnapshot,
)
from sidecar.breaker._window import CountWindow, SlidingWindow, TimeWindow

__all__ = [
    "BreakerListener",
    "BreakerSettings",
    "BreakerView",
    "CircuitBreaker",
    "CountWindow",
    "IllegalTransitionError",
    "Mode",
    "ModeChange",
    "Permit",
    "SlidingWindow",
    "State",
    "TimeWindow",
    "Transition",
    "WindowSnapshot",
]
