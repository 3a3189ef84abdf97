"""The transition table and the adaptive open-duration policy."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.breaker import BreakerSettings, IllegalTransitionError, State
from sidecar.breaker._state import (
    LEGAL_TRANSITIONS,
    base_open_duration_ms,
    jittered_open_duration_ms,
    require_legal,
)


@pytest.mark.parametrize(
    ("from_state", "to_state", "reason"),
    [
        (State.CLOSED, State.HALF_OPEN, "open_elapsed"),  # must go through OPEN
        (State.OPEN, State.OPEN, "failure_rate"),  # no self-transitions
        (State.CLOSED, State.CLOSED, "probes_healthy"),
        (State.HALF_OPEN, State.HALF_OPEN, "open_elapsed"),
        (State.CLOSED, State.OPEN, "probes_healthy"),  # legal edge, wrong reason
        (State.OPEN, State.HALF_OPEN, "failure_rate"),
        (State.HALF_OPEN, State.CLOSED, "open_elapsed"),
        (State.OPEN, State.CLOSED, "probes_healthy"),  # OPEN closes only by leaving enforcement
    ],
)
def test_illegal_transition_raises(from_state: State, to_state: State, reason: str) -> None:
    with pytest.raises(IllegalTransitionError):
        require_legal(from_state, to_state, reason)


# The legal transitions, written out by hand from docs/breaker.md (not read from the table):
# the table must say exactly this, and require_legal must accept exactly this.
EXPECTED_LEGAL: dict[tuple[State, State], set[str]] = {
    (State.CLOSED, State.OPEN): {
        "failure_rate", "slow_call_rate", "consecutive_failures", "forced_open",
    },
    (State.OPEN, State.HALF_OPEN): {"open_elapsed"},
    (State.HALF_OPEN, State.CLOSED): {"probes_healthy", "mode_changed"},
    (State.HALF_OPEN, State.OPEN): {"probe_failed", "probe_slow", "forced_open"},
    (State.OPEN, State.CLOSED): {"mode_changed"},  # entering disabled
}
ALL_REASONS = sorted(set().union(*EXPECTED_LEGAL.values()) | {"", "bogus"})


def test_the_transition_table_is_exactly_the_documented_one() -> None:
    assert {pair: set(reasons) for pair, reasons in LEGAL_TRANSITIONS.items()} == EXPECTED_LEGAL


@pytest.mark.parametrize("from_state", list(State))
@pytest.mark.parametrize("to_state", list(State))
def test_require_legal_accepts_exactly_the_documented_transitions(
    from_state: State, to_state: State
) -> None:
    allowed = EXPECTED_LEGAL.get((from_state, to_state), set())
    for reason in ALL_REASONS:
        if reason in allowed:
            require_legal(from_state, to_state, reason)
        else:
            with pytest.raises(IllegalTransitionError):
                require_legal(from_state, to_state, reason)


def test_open_duration_doubles_per_trip_in_a_row_up_to_the_cap() -> None:
    settings = BreakerSettings(open_base_ms=1000, open_multiplier=2.0, open_max_ms=10_000)
    durations = [base_open_duration_ms(settings, streak) for streak in range(1, 7)]
    assert durations == [1000, 2000, 4000, 8000, 10_000, 10_000]


def test_open_duration_never_overflows_for_an_endless_streak() -> None:
    settings = BreakerSettings(open_multiplier=10.0, open_max_ms=60_000)
    assert base_open_duration_ms(settings, 100_000) == 60_000


@given(
    base_ms=st.floats(1.0, 5000.0),
    multiplier=st.floats(1.0, 4.0),
    extra_max_ms=st.floats(0.0, 100_000.0),
    jitter=st.floats(0.0, 0.99),
    streak=st.integers(1, 60),
    seed=st.integers(0, 2**32 - 1),
)
def test_jitter_stays_within_its_bounds_and_never_exceeds_the_cap(
    base_ms: float, multiplier: float, extra_max_ms: float, jitter: float, streak: int, seed: int
) -> None:
    settings = BreakerSettings(
        open_base_ms=base_ms,
        open_multiplier=multiplier,
        open_max_ms=base_ms + extra_max_ms,
        open_jitter=jitter,
    )
    base = base_open_duration_ms(settings, streak)
    duration = jittered_open_duration_ms(settings, streak, random.Random(seed))
    assert duration > 0
    assert duration <= settings.open_max_ms
    assert base * (1 - jitter) - 1e-9 <= duration <= base * (1 + jitter) + 1e-9


def test_jitter_actually_spreads_durations() -> None:
    settings = BreakerSettings(open_jitter=0.2)
    rng = random.Random(1)
    durations = {jittered_open_duration_ms(settings, 1, rng) for _ in range(50)}
    assert len(durations) > 40
    assert min(durations) < 900 and max(durations) > 1100
