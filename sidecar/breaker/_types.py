"""Value types of the breaker: states, modes, snapshots, transition records, permits, listeners.

Everything here is immutable (frozen, slotted dataclasses) except :class:`Permit`, which is an
opaque token, and :class:`BreakerListener`, which users subclass. These records cross thread
boundaries freely: a listener may keep a :class:`Transition` and hand it to another thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    """Where the breaker's state machine is. The value is the wire/metric label."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Mode(StrEnum):
    """How the breaker acts on its state (an operator's choice, changed at runtime).

    - ``enforce``: the state machine decides; OPEN and a full HALF_OPEN reject.
    - ``metrics_only``: a dry run for adoption. The state machine runs and listeners hear every
      transition, but :meth:`CircuitBreaker.try_acquire` never rejects.
    - ``disabled``: the breaker is out of the path: it admits everything, records nothing and
      never transitions.
    - ``forced_open``: reject everything until the operator says otherwise.
    """

    ENFORCE = "enforce"
    METRICS_ONLY = "metrics_only"
    DISABLED = "disabled"
    FORCED_OPEN = "forced_open"


class IllegalTransitionError(RuntimeError):
    """The state machine was asked for a transition its table does not allow.

    This is always a bug in the breaker, never a user error: it is raised rather than logged so
    that tests catch it at once.
    """


@dataclass(frozen=True, slots=True)
class WindowSnapshot:
    """The counts a decision was based on, frozen at one instant.

    ``consecutive_failures`` is the run of failures ending at the latest call, counting only
    calls still inside the window. Rates are 0.0 for an empty window.
    """

    calls: int
    failures: int
    slow_calls: int
    failure_rate: float
    slow_call_rate: float
    consecutive_failures: int


EMPTY_SNAPSHOT = WindowSnapshot(0, 0, 0, 0.0, 0.0, 0)


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change, as listeners (tracing, metrics, the event outbox) receive it.

    ``reason`` is one of ``failure_rate``, ``slow_call_rate``, ``consecutive_failures``,
    ``open_elapsed``, ``probes_healthy``, ``probe_failed``, ``probe_slow``, ``mode_changed``,
    ``forced_open``.

    ``snapshot`` holds the numbers the decision was based on: the sliding window when leaving
    CLOSED or OPEN, the probes' outcomes when leaving HALF_OPEN.

    ``open_duration_s`` is the scheduled open time (jitter included) when ``to_state`` is OPEN
    after a trip, and 0.0 otherwise; it is also 0.0 for ``forced_open``, which has no scheduled
    end. ``trip_streak`` is the streak after this transition. ``mode`` is the mode at the time,
    so a consumer can tell a ``metrics_only`` dry-run transition from an enforced one.
    """

    breaker: str
    from_state: State
    to_state: State
    reason: str
    snapshot: WindowSnapshot
    open_duration_s: float
    trip_streak: int
    mode: Mode
    at_monotonic: float
    at_wall: float


@dataclass(frozen=True, slots=True)
class ModeChange:
    """The mode changed: by an operator (``source="admin"``) or a reload (``source="config"``)."""

    breaker: str
    from_mode: Mode
    to_mode: Mode
    source: str
    at_wall: float


class Permit:
    """Admission token returned by :meth:`CircuitBreaker.try_acquire`; hand it back exactly once.

    Give it to :meth:`CircuitBreaker.record` when the call ends with an outcome, or to
    :meth:`CircuitBreaker.release` when it ends without one (e.g. the caller cancelled).
    Only ``probe`` is public: True when the call was admitted as a HALF_OPEN probe.

    Callers never construct permits. Non-probe admissions all share one immutable-in-practice
    instance, so the CLOSED hot path allocates nothing; probe permits are fresh objects whose
    identity the breaker tracks (and whose ``expires_at`` is when their slot is reclaimed).
    """

    __slots__ = ("expires_at", "probe")

    def __init__(self, probe: bool, expires_at: float = float("inf")) -> None:
        self.probe = probe
        self.expires_at = expires_at

    def __repr__(self) -> str:
        if not self.probe:
            return "Permit(probe=False)"
        return f"Permit(probe=True, expires_at={self.expires_at:.3f})"


ADMIT = Permit(probe=False)
"""The shared permit for every non-probe admission (CLOSED, metrics_only, disabled)."""


class BreakerListener:
    """Receives the breaker's state and mode changes. Subclass and override what you need.

    Threading rules: methods are called synchronously, in the thread (or asyncio task) of the
    call that caused the change, *after* the breaker's lock is released, so a listener may call
    back into the breaker (``view()``, ``retry_after_s()``) and sees the causing call's
    contextvars (e.g. the current OpenTelemetry span). They run on the data path: they must not
    block (no I/O, no waiting); hand work to a queue instead. An exception raised by a listener
    is logged and swallowed: observability must never fail a call. When two threads cause
    transitions at nearly the same time, listeners may hear them out of order; use
    ``at_monotonic`` to order them.

    Example::

        class PrintTransitions(BreakerListener):
            def on_transition(self, t: Transition) -> None:
                print(f"{t.breaker}: {t.from_state} -> {t.to_state} ({t.reason})")

        breaker.add_listener(PrintTransitions())
    """

    def on_transition(self, transition: Transition) -> None:
        """Called after every state change."""

    def on_mode_change(self, change: ModeChange) -> None:
        """Called after every mode change (before any transition the change causes)."""


@dataclass(frozen=True, slots=True)
class BreakerView:
    """A consistent read of one breaker for admin APIs, dashboards and tests.

    ``snapshot`` is the sliding window in CLOSED and OPEN (in OPEN: still the calls that
    tripped it, as nothing new is counted), the probes' outcomes in HALF_OPEN.
    ``open_until_wall`` is the unix time the open period ends (None when not OPEN, or when
    forced open: no scheduled end). ``trip_streak`` already includes any decay earned by time
    spent CLOSED (one step per ``streak_decay_ms``). ``open_duration_s`` is the current open
    period (when OPEN) or the base of the next one, before jitter. ``streak_decay_in_s`` is the
    time until the trip streak next falls by one if the breaker stays CLOSED; 0.0 when it
    cannot fall: the streak is 0, the breaker is not CLOSED, or it is ``disabled`` (decay is
    paused while the breaker is out of the path).
    """

    name: str
    state: State
    mode: Mode
    snapshot: WindowSnapshot
    open_until_wall: float | None
    trip_streak: int
    last_transition: Transition | None
    half_open_in_flight: int
    open_duration_s: float
    streak_decay_in_s: float = 0.0
