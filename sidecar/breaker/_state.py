"""The state machine's fixed policy (no time, no locks): legal transitions and open durations.

The transition table is the single list of state changes the breaker may make, each with the
reasons that justify it. :func:`require_legal` refuses everything else by raising
:class:`IllegalTransitionError`: reaching it is a bug in the breaker, so it must be loud.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from sidecar.breaker._rules import TRIP_REASONS
from sidecar.breaker._settings import BreakerSettings
from sidecar.breaker._types import IllegalTransitionError, State

# Reasons (the ``Transition.reason`` vocabulary, a contract with dashboards and events). The
# trip reasons (failure_rate, slow_call_rate, consecutive_failures) live with their rules.
OPEN_ELAPSED = "open_elapsed"
PROBES_HEALTHY = "probes_healthy"
PROBE_FAILED = "probe_failed"
PROBE_SLOW = "probe_slow"
MODE_CHANGED = "mode_changed"
FORCED_OPEN = "forced_open"

LEGAL_TRANSITIONS: Mapping[tuple[State, State], frozenset[str]] = {
    (State.CLOSED, State.OPEN): TRIP_REASONS | {FORCED_OPEN},
    (State.OPEN, State.HALF_OPEN): frozenset({OPEN_ELAPSED}),
    (State.HALF_OPEN, State.CLOSED): frozenset({PROBES_HEALTHY, MODE_CHANGED}),
    (State.HALF_OPEN, State.OPEN): frozenset({PROBE_FAILED, PROBE_SLOW, FORCED_OPEN}),
    # Entering ``disabled`` takes the breaker out of the path; it rests CLOSED meanwhile.
    (State.OPEN, State.CLOSED): frozenset({MODE_CHANGED}),
}
"""(from, to) -> reasons allowed. Absent pairs (CLOSED -> HALF_OPEN, X -> X, ...) are illegal."""


def require_legal(from_state: State, to_state: State, reason: str) -> None:
    """Raise :class:`IllegalTransitionError` unless the table allows this change for this reason."""
    allowed = LEGAL_TRANSITIONS.get((from_state, to_state))
    if allowed is None:
        raise IllegalTransitionError(
            f"illegal transition {from_state.value} -> {to_state.value} (reason {reason!r})"
        )
    if reason not in allowed:
        raise IllegalTransitionError(
            f"transition {from_state.value} -> {to_state.value} cannot have reason {reason!r}; "
            f"allowed: {sorted(allowed)}"
        )


def base_open_duration_ms(settings: BreakerSettings, streak: int) -> float:
    """``min(open_max_ms, open_base_ms * open_multiplier ** (streak - 1))``, before jitter.

    A streak below 1 is treated as 1 (the first trip). Never overflows, however long the streak.
    """
    exponent = max(0, streak - 1)
    try:
        raw = settings.open_base_ms * settings.open_multiplier**exponent
    except OverflowError:
        return settings.open_max_ms
    return min(settings.open_max_ms, raw)


def jittered_open_duration_ms(
    settings: BreakerSettings, streak: int, rng: random.Random
) -> float:
    """The base duration spread by ``+/- open_jitter`` (uniform), then capped at ``open_max_ms``.

    Jitter keeps a fleet of sidecars that tripped together from probing a recovering upstream
    in the same instant. The result is always > 0 because ``open_jitter < 1``.
    """
    base = base_open_duration_ms(settings, streak)
    if settings.open_jitter == 0:
        return base
    spread = 1.0 + settings.open_jitter * rng.uniform(-1.0, 1.0)
    return min(settings.open_max_ms, base * spread)
