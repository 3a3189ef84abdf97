"""Trip-streak decay (docs/breaker.md): one step per ``streak_decay_ms`` spent CLOSED without
a trip, on the injected clock, never in call counts.

At real traffic a count window passes in milliseconds; a streak that decayed per window would
be gone before a flapping upstream failed again, and its open duration would never grow.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.breaker import CircuitBreaker, Mode, State
from sidecar.breaker._state import base_open_duration_ms
from tests.unit.breaker._support import FakeClock, Recorder, call, calls, make_breaker

DECAY_S = 30.0  # streak_decay_ms = 30 000 in every test below unless it says otherwise


def _closed_with_streak(
    streak: int, **overrides: Any
) -> tuple[CircuitBreaker, FakeClock, Recorder]:
    """A CLOSED breaker whose trip streak is ``streak`` (trip, fail probes, heal), having spent
    no time CLOSED since it healed."""
    options: dict[str, Any] = {
        "consecutive_failures": 1, "streak_decay_ms": DECAY_S * 1000, "half_open_probes": 1,
        **overrides,
    }
    breaker, clock, recorder = make_breaker(**options)
    assert call(breaker, failed=True)
    for _ in range(streak - 1):
        clock.advance(breaker.retry_after_s())
        assert call(breaker, failed=True)  # a failing probe: OPEN again, streak + 1
    clock.advance(breaker.retry_after_s())
    calls(breaker, breaker.settings.half_open_probes)
    assert breaker.state is State.CLOSED
    assert breaker.view().trip_streak == streak
    return breaker, clock, recorder


def test_the_streak_falls_by_one_per_streak_decay_ms_spent_closed() -> None:
    breaker, clock, _ = _closed_with_streak(3)
    assert breaker.view().streak_decay_in_s == DECAY_S
    clock.advance(DECAY_S - 0.001)
    assert breaker.view().trip_streak == 3
    assert breaker.view().streak_decay_in_s == pytest.approx(0.001)
    clock.advance(0.001)
    assert (breaker.view().trip_streak, breaker.view().streak_decay_in_s) == (2, DECAY_S)
    clock.advance(DECAY_S)
    assert breaker.view().trip_streak == 1
    clock.advance(DECAY_S / 2)
    assert (breaker.view().trip_streak, breaker.view().streak_decay_in_s) == (1, DECAY_S / 2)
    clock.advance(DECAY_S / 2)
    view = breaker.view()
    assert (view.trip_streak, view.streak_decay_in_s) == (0, 0.0)  # nothing left to decay
    clock.advance(100 * DECAY_S)
    assert breaker.view().trip_streak == 0  # never below zero


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(0, 5000),
    window=st.sampled_from([("count", 1), ("count", 20), ("time", 1)]),
    streak=st.integers(1, 4),
)
def test_any_number_of_successful_calls_within_one_millisecond_decays_nothing(
    n: int, window: tuple[str, int], streak: int
) -> None:
    window_type, size = window
    breaker, clock, _ = _closed_with_streak(
        streak, window_type=window_type, window_size=size, window_seconds=0.0005,
        window_buckets=1, minimum_calls=1,
    )
    step = 0.001 / max(n, 1)  # n calls spread over (just under) 1 ms
    for _ in range(n):
        clock.advance(step * 0.999)
        assert call(breaker)
    assert breaker.view().trip_streak == streak
    assert breaker.view().streak_decay_in_s == pytest.approx(DECAY_S - 0.000999 * (n > 0))


@settings(max_examples=100, deadline=None)
@given(
    streak=st.integers(1, 6),
    waits=st.lists(st.floats(0.0, 3 * DECAY_S, allow_nan=False), max_size=12),
    reads=st.lists(st.booleans(), min_size=12, max_size=12),
)
def test_the_streak_depends_only_on_the_total_time_closed_however_it_is_read(
    streak: int, waits: list[float], reads: list[bool]
) -> None:
    # Integer milliseconds keep the clock's sums exact; reads in between must not lose time.
    breaker, clock, _ = _closed_with_streak(streak)
    total = 0.0
    for wait, read in zip(waits, reads, strict=False):
        wait = round(wait * 1000) / 1000
        clock.advance(wait)
        total += wait
        if read:
            breaker.view()
    assert breaker.view().trip_streak == max(0, streak - int(round(total * 1000) // 30_000))


def test_time_open_does_not_count() -> None:
    breaker, clock, _ = make_breaker(consecutive_failures=1, streak_decay_ms=DECAY_S * 1000)
    call(breaker, failed=True)
    clock.advance(10 * DECAY_S)  # OPEN all along: no probe has come yet
    view = breaker.view()
    assert (view.state, view.trip_streak, view.streak_decay_in_s) == (State.OPEN, 1, 0.0)
    assert call(breaker)  # the late first probe closes it (half_open_probes=3: three of them)
    calls(breaker, 2)
    view = breaker.view()
    assert (view.state, view.trip_streak) == (State.CLOSED, 1)
    assert view.streak_decay_in_s == DECAY_S  # the decay clock starts on entering CLOSED


def test_time_half_open_does_not_count() -> None:
    breaker, clock, _ = make_breaker(
        consecutive_failures=1, streak_decay_ms=DECAY_S * 1000, half_open_probes=1,
        probe_timeout_ms=1000 * 10 * DECAY_S,
    )
    call(breaker, failed=True)
    clock.advance(breaker.retry_after_s())
    probe = breaker.try_acquire()
    assert probe is not None and breaker.state is State.HALF_OPEN
    clock.advance(5 * DECAY_S)  # a slow probe: HALF_OPEN all along
    assert (breaker.view().trip_streak, breaker.view().streak_decay_in_s) == (1, 0.0)
    breaker.record(probe, 0.001, failed=False)
    assert breaker.view().state is State.CLOSED
    assert (breaker.view().trip_streak, breaker.view().streak_decay_in_s) == (1, DECAY_S)


def test_streak_3_after_2_5_decay_periods_is_1_and_the_next_open_is_base_x_multiplier() -> None:
    breaker, clock, recorder = _closed_with_streak(
        3, open_base_ms=500.0, open_multiplier=2.0, open_max_ms=60_000.0
    )
    clock.advance(2.5 * DECAY_S)
    view = breaker.view()
    assert view.trip_streak == 1
    assert view.streak_decay_in_s == pytest.approx(DECAY_S / 2)
    assert view.open_duration_s == 1.0  # the next open period: base x multiplier^(2-1)
    assert call(breaker, failed=True)
    trip = recorder.transitions[-1]
    assert (trip.to_state, trip.trip_streak) == (State.OPEN, 2)  # the trip increments the streak
    # base x multiplier^(streak-1) with the incremented streak: 500 ms x 2^1
    assert trip.open_duration_s == base_open_duration_ms(breaker.settings, 2) / 1000 == 1.0
    assert breaker.view().open_duration_s == 1.0


def test_a_trip_resets_the_decay_clock() -> None:
    breaker, clock, _ = _closed_with_streak(1)
    clock.advance(0.9 * DECAY_S)  # 90 % of the way to the next step...
    assert call(breaker, failed=True)  # ...then a trip: streak 2, and the progress is gone
    clock.advance(breaker.retry_after_s())
    calls(breaker, breaker.settings.half_open_probes)
    assert breaker.state is State.CLOSED
    assert (breaker.view().trip_streak, breaker.view().streak_decay_in_s) == (2, DECAY_S)
    clock.advance(0.2 * DECAY_S)
    assert breaker.view().trip_streak == 2  # 0.9 + 0.2 periods, but not in one CLOSED stretch


def test_the_trip_transition_carries_the_decayed_streak_plus_one() -> None:
    breaker, clock, recorder = _closed_with_streak(4)
    clock.advance(3 * DECAY_S)
    assert call(breaker, failed=True)
    assert recorder.transitions[-1].trip_streak == 2  # 4 - 3 + 1


def test_time_disabled_does_not_count_and_metrics_only_does() -> None:
    breaker, clock, _ = _closed_with_streak(3)
    clock.advance(0.5 * DECAY_S)
    breaker.set_mode(Mode.DISABLED)
    clock.advance(10 * DECAY_S)  # out of the path: no evidence of health, decay paused
    view = breaker.view()
    assert (view.trip_streak, view.streak_decay_in_s) == (3, 0.0)
    breaker.set_mode(Mode.METRICS_ONLY)
    assert breaker.view().streak_decay_in_s == DECAY_S  # restarts when disabling ends
    clock.advance(DECAY_S)
    assert breaker.view().trip_streak == 2  # a dry run still judges health: time counts
    breaker.set_mode(Mode.ENFORCE)
    clock.advance(DECAY_S)
    assert breaker.view().trip_streak == 1


def test_a_forced_open_period_does_not_count() -> None:
    breaker, clock, _ = _closed_with_streak(2)
    clock.advance(0.5 * DECAY_S)
    breaker.set_mode(Mode.FORCED_OPEN)
    clock.advance(10 * DECAY_S)
    assert breaker.view().trip_streak == 2
    breaker.set_mode(Mode.ENFORCE)
    calls(breaker, breaker.settings.half_open_probes)  # probes first: trusted again only then
    assert breaker.state is State.CLOSED
    assert (breaker.view().trip_streak, breaker.view().streak_decay_in_s) == (2, DECAY_S)


def test_a_reload_keeps_the_time_already_spent_towards_the_next_step() -> None:
    breaker, clock, _ = _closed_with_streak(3)
    clock.advance(1.5 * DECAY_S)  # one step taken, half of the next one spent
    assert breaker.view().trip_streak == 2
    breaker.update_settings(
        breaker.settings.__class__(
            consecutive_failures=1, half_open_probes=1, open_jitter=0.0, streak_decay_ms=20_000
        )
    )
    assert breaker.view().trip_streak == 2
    assert breaker.view().streak_decay_in_s == pytest.approx(20.0 - 0.5 * DECAY_S)
    clock.advance(20.0 - 0.5 * DECAY_S)
    assert breaker.view().trip_streak == 1


def test_a_streak_of_zero_has_no_countdown() -> None:
    breaker, clock, _ = make_breaker(streak_decay_ms=DECAY_S * 1000)
    calls(breaker, 50)
    clock.advance(DECAY_S)
    view = breaker.view()
    assert (view.trip_streak, view.streak_decay_in_s) == (0, 0.0)


def test_a_first_trip_after_a_long_quiet_spell_closed_starts_the_streak_at_one() -> None:
    # Regression (found by the stateful test): time CLOSED with streak 0 must not be "spent" on
    # the streak the trip has just created.
    breaker, clock, recorder = make_breaker(consecutive_failures=1, streak_decay_ms=DECAY_S * 1000)
    clock.advance(5 * DECAY_S)
    assert call(breaker, failed=True)
    assert recorder.transitions[-1].trip_streak == 1
    assert breaker.view().trip_streak == 1
