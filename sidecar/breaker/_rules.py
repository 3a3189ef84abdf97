"""Trip rules: when the sliding window says a CLOSED breaker's upstream is unhealthy.

Each rule is a small pure function ``(counts, limits) -> reason or None``: it reads the window's
running sums and the thresholds, and answers with the ``Transition.reason`` it trips for, or
``None``. The breaker asks :data:`TRIP_RULES` in order and trips for the first reason it hears,
so the order is the precedence of the reasons: when a window crosses two thresholds at once it
reports the first rule's reason.

Asking is not free (a call per rule), so the breaker asks only when a rule could have turned
true: never while the window holds no failure and no slow call; otherwise after a failed or
slow call, on the call that brings the window to ``minimum_calls``, after calls aged out of a
time window, and after a reload. That is exact only because every rule keeps one contract:
**a rule never turns true when a healthy call (neither failed nor slow) joins the window and
at most the oldest call leaves to make room for it** (failures and slow calls can then only
fall, calls only grow, the run ends). Rules must also stay O(1) and allocation-free: they
run under the breaker's lock.

Adding a rule (see docs/breaker.md, "Adding a trip rule"): one function here, listed in
:data:`TRIP_RULES` with its reason in :data:`TRIP_REASONS`; one :class:`BreakerSettings`
field; one ``BreakerConfig`` field in ``sidecar.config``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sidecar.breaker._settings import BreakerSettings

# Trip reasons (part of the ``Transition.reason`` vocabulary, a contract with dashboards and
# events: never rename one).
FAILURE_RATE = "failure_rate"
SLOW_CALL_RATE = "slow_call_rate"
CONSECUTIVE_FAILURES = "consecutive_failures"

NEVER = 1 << 62
"""A count threshold that cannot be reached (a rule turned off)."""


class WindowCounts(Protocol):
    """The running sums a rule reads; every sliding window has them (see ``SlidingWindow``).

    ``run`` is the failures in a row ending at the latest call since the last reset; it may
    exceed ``calls`` once old calls left a time window.
    """

    @property
    def calls(self) -> int: ...

    @property
    def failures(self) -> int: ...

    @property
    def slow_calls(self) -> int: ...

    @property
    def run(self) -> int: ...


@dataclass(frozen=True, slots=True)
class TripLimits:
    """The thresholds as the rules compare them, derived once per :class:`BreakerSettings`.

    Derived rather than read from the settings on every call because two thresholds are
    clamped: a count window never holds more than ``window_size`` calls, so there
    ``minimum_calls`` and ``consecutive_failures`` act as ``min(value, window_size)``.
    ``settings`` is there for a rule whose threshold needs no such work.
    """

    minimum_calls: int
    failure_rate: float
    slow_call_rate: float
    consecutive_failures: int
    """``NEVER`` when the rule is off."""
    settings: BreakerSettings

    @classmethod
    def from_settings(cls, settings: BreakerSettings) -> TripLimits:
        count = settings.window_type == "count"
        size = settings.window_size
        consecutive = settings.consecutive_failures
        if consecutive is None:
            consecutive = NEVER
        elif count:
            consecutive = min(consecutive, size)
        return cls(
            minimum_calls=min(settings.minimum_calls, size) if count else settings.minimum_calls,
            failure_rate=settings.failure_rate,
            slow_call_rate=settings.slow_call_rate,
            consecutive_failures=consecutive,
            settings=settings,
        )


TripRule = Callable[[WindowCounts, TripLimits], str | None]
"""A trip rule: pure, O(1), allocation-free; returns its reason when it trips."""


def failure_rate_rule(counts: WindowCounts, limits: TripLimits) -> str | None:
    """Failures / calls >= ``failure_rate``, judged from ``minimum_calls`` on."""
    calls = counts.calls
    if calls >= limits.minimum_calls:
        failures = counts.failures
        if failures and failures / calls >= limits.failure_rate:
            return FAILURE_RATE
    return None


def slow_call_rate_rule(counts: WindowCounts, limits: TripLimits) -> str | None:
    """Slow calls / calls >= ``slow_call_rate``, judged from ``minimum_calls`` on."""
    calls = counts.calls
    if calls >= limits.minimum_calls:
        slow_calls = counts.slow_calls
        if slow_calls and slow_calls / calls >= limits.slow_call_rate:
            return SLOW_CALL_RATE
    return None


def consecutive_failures_rule(counts: WindowCounts, limits: TripLimits) -> str | None:
    """``consecutive_failures`` failures in a row inside the window, even below
    ``minimum_calls``: a dead upstream should not get ``minimum_calls`` chances."""
    if counts.run >= limits.consecutive_failures <= counts.calls:
        return CONSECUTIVE_FAILURES
    return None


TRIP_RULES: tuple[TripRule, ...] = (
    failure_rate_rule,
    slow_call_rate_rule,
    consecutive_failures_rule,
)
"""The rules in the order the breaker asks them (first reason wins)."""

TRIP_REASONS = frozenset({FAILURE_RATE, SLOW_CALL_RATE, CONSECUTIVE_FAILURES})
"""Every reason a rule of :data:`TRIP_RULES` may return: the legal reasons for CLOSED -> OPEN."""


def first_trip(counts: WindowCounts, limits: TripLimits) -> str | None:
    """The reason of the first rule that trips, or None: what the breaker decides."""
    for rule in TRIP_RULES:
        reason = rule(counts, limits)
        if reason is not None:
            return reason
    return None
