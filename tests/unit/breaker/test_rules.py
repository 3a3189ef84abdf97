"""The trip rules on their own: each trips exactly when its threshold is crossed, and every rule
keeps the contract the breaker's fast path relies on (a healthy call never makes one true)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from sidecar.breaker import BreakerSettings, State
from sidecar.breaker._rules import (
    CONSECUTIVE_FAILURES,
    FAILURE_RATE,
    NEVER,
    SLOW_CALL_RATE,
    TRIP_REASONS,
    TRIP_RULES,
    TripLimits,
    TripRule,
    consecutive_failures_rule,
    failure_rate_rule,
    first_trip,
    slow_call_rate_rule,
)
from sidecar.breaker._state import LEGAL_TRANSITIONS


@dataclass(frozen=True)
class Counts:
    """A window's running sums, as a rule sees them."""

    calls: int
    failures: int = 0
    slow_calls: int = 0
    run: int = 0


def limits(
    minimum_calls: int = 1,
    failure_rate: float = 1.0,
    slow_call_rate: float = 1.0,
    consecutive_failures: int = NEVER,
) -> TripLimits:
    return TripLimits(
        minimum_calls=minimum_calls,
        failure_rate=failure_rate,
        slow_call_rate=slow_call_rate,
        consecutive_failures=consecutive_failures,
        settings=BreakerSettings(),
    )


rates = st.one_of(
    st.floats(min_value=0.0, max_value=1.0, exclude_min=True),
    st.sampled_from([0.1, 0.2, 0.25, 1 / 3, 0.5, 2 / 3, 0.8, 1.0]),
)


@st.composite
def counts(draw: st.DrawFn, max_calls: int = 40) -> Counts:
    calls = draw(st.integers(0, max_calls))
    return Counts(
        calls=calls,
        failures=draw(st.integers(0, calls)),
        slow_calls=draw(st.integers(0, calls)),
        run=draw(st.integers(0, calls + 5)),  # a time window's run may outlast its calls
    )


@st.composite
def trip_limits(draw: st.DrawFn) -> TripLimits:
    return limits(
        minimum_calls=draw(st.integers(1, 30)),
        failure_rate=draw(rates),
        slow_call_rate=draw(rates),
        consecutive_failures=draw(st.one_of(st.integers(1, 30), st.just(NEVER))),
    )


# --- each rule trips exactly when its threshold is crossed ----------------------------------


@given(calls=st.integers(1, 60), minimum_calls=st.integers(1, 60), rate=rates)
def test_failure_rate_trips_from_the_first_failure_count_that_reaches_the_rate(
    calls: int, minimum_calls: int, rate: float
) -> None:
    answers = [
        failure_rate_rule(Counts(calls, failures=f), limits(minimum_calls, failure_rate=rate))
        for f in range(calls + 1)
    ]
    if calls < minimum_calls:
        assert answers == [None] * (calls + 1)  # rates are not judged before minimum_calls
        return
    threshold = next((f for f in range(1, calls + 1) if f / calls >= rate), calls + 1)
    assert answers == [None] * threshold + [FAILURE_RATE] * (calls + 1 - threshold)
    assert threshold == calls + 1 or (threshold - 1) / calls < rate


@given(calls=st.integers(1, 60), minimum_calls=st.integers(1, 60), rate=rates)
def test_slow_call_rate_trips_from_the_first_slow_count_that_reaches_the_rate(
    calls: int, minimum_calls: int, rate: float
) -> None:
    answers = [
        slow_call_rate_rule(Counts(calls, slow_calls=s), limits(minimum_calls, slow_call_rate=rate))
        for s in range(calls + 1)
    ]
    if calls < minimum_calls:
        assert answers == [None] * (calls + 1)
        return
    threshold = next((s for s in range(1, calls + 1) if s / calls >= rate), calls + 1)
    assert answers == [None] * threshold + [SLOW_CALL_RATE] * (calls + 1 - threshold)


@given(calls=st.integers(0, 40), run=st.integers(0, 45), n=st.integers(1, 40))
def test_consecutive_failures_trip_when_the_run_inside_the_window_reaches_n(
    calls: int, run: int, n: int
) -> None:
    lim = limits(minimum_calls=NEVER, consecutive_failures=n)
    answer = consecutive_failures_rule(Counts(calls, run=run), lim)
    assert (answer == CONSECUTIVE_FAILURES) == (min(run, calls) >= n)  # even below minimum_calls
    assert answer in (None, CONSECUTIVE_FAILURES)


@given(c=counts())
def test_consecutive_failures_turned_off_never_trips(c: Counts) -> None:
    assert consecutive_failures_rule(c, limits(consecutive_failures=NEVER)) is None


@given(c=counts(), lim=trip_limits())
def test_each_rule_reads_only_its_own_counter(c: Counts, lim: TripLimits) -> None:
    assert failure_rate_rule(c, lim) == failure_rate_rule(replace(c, slow_calls=0, run=0), lim)
    assert slow_call_rate_rule(c, lim) == slow_call_rate_rule(replace(c, failures=0, run=0), lim)
    assert consecutive_failures_rule(c, lim) == consecutive_failures_rule(
        replace(c, failures=0, slow_calls=0), lim
    )


# --- the tuple the breaker asks --------------------------------------------------------------


def test_the_rules_are_asked_failure_rate_then_slow_call_rate_then_consecutive_failures() -> None:
    assert TRIP_RULES == (failure_rate_rule, slow_call_rate_rule, consecutive_failures_rule)
    everything = Counts(calls=10, failures=10, slow_calls=10, run=10)
    lim = limits(minimum_calls=1, consecutive_failures=1)
    assert first_trip(everything, lim) == FAILURE_RATE
    assert first_trip(replace(everything, failures=0), lim) == SLOW_CALL_RATE
    assert first_trip(replace(everything, failures=0, slow_calls=0), lim) == CONSECUTIVE_FAILURES
    assert first_trip(Counts(calls=10), lim) is None


@given(c=counts(), lim=trip_limits())
def test_first_trip_is_the_first_rule_in_the_tuple_that_answers(
    c: Counts, lim: TripLimits
) -> None:
    answers = [rule(c, lim) for rule in TRIP_RULES]
    assert first_trip(c, lim) == next((a for a in answers if a is not None), None)


@pytest.mark.parametrize("rule", TRIP_RULES, ids=lambda r: r.__name__)
def test_every_rule_reports_a_reason_that_may_open_a_closed_breaker(rule: TripRule) -> None:
    lim = limits(minimum_calls=1, failure_rate=0.1, slow_call_rate=0.1, consecutive_failures=1)
    reason = rule(Counts(calls=5, failures=5, slow_calls=5, run=5), lim)
    assert reason in TRIP_REASONS
    assert reason in LEGAL_TRANSITIONS[(State.CLOSED, State.OPEN)]


def test_trip_reasons_are_the_reasons_the_breaker_has_always_reported() -> None:
    assert TRIP_REASONS == {"failure_rate", "slow_call_rate", "consecutive_failures"}


# --- the contract the breaker's fast path relies on, checked for every rule ------------------


@st.composite
def healthy_step(draw: st.DrawFn) -> tuple[Counts, Counts, TripLimits]:
    """A window before and after one healthy call (neither failed nor slow) that neither
    reaches minimum_calls nor loses calls by age: it grows by one or replaces its oldest call
    (a full count window), so failures and slow calls can only fall and the run ends."""
    lim = draw(trip_limits())
    before = draw(counts())
    full = draw(st.booleans()) and before.calls > 0
    if full:  # a full count window: the oldest call leaves to make room
        evicted = draw(st.sampled_from(["success", "failure", "slow", "slow failure"]))
        after = Counts(
            calls=before.calls,
            failures=before.failures - ("failure" in evicted and before.failures > 0),
            slow_calls=before.slow_calls - ("slow" in evicted and before.slow_calls > 0),
        )
    else:
        after = Counts(before.calls + 1, before.failures, before.slow_calls)
    assume(not (before.calls < lim.minimum_calls <= after.calls))  # reaching it is judged
    return before, after, lim


@pytest.mark.parametrize("rule", TRIP_RULES, ids=lambda r: r.__name__)
@given(step=healthy_step())
def test_a_healthy_call_never_makes_a_rule_true(
    rule: TripRule, step: tuple[Counts, Counts, TripLimits]
) -> None:
    before, after, lim = step
    if rule(before, lim) is None:
        assert rule(after, lim) is None


# --- limits derived from settings ------------------------------------------------------------


def test_count_windows_clamp_minimum_calls_and_consecutive_failures_to_their_size() -> None:
    lim = TripLimits.from_settings(
        BreakerSettings(window_size=5, minimum_calls=10, consecutive_failures=8)
    )
    assert (lim.minimum_calls, lim.consecutive_failures) == (5, 5)


def test_time_windows_take_minimum_calls_and_consecutive_failures_as_they_are() -> None:
    settings = BreakerSettings(
        window_type="time", window_size=5, minimum_calls=10, consecutive_failures=8
    )
    lim = TripLimits.from_settings(settings)
    assert (lim.minimum_calls, lim.consecutive_failures) == (10, 8)
    assert lim.settings is settings


def test_consecutive_failures_none_becomes_a_threshold_no_run_reaches() -> None:
    lim = TripLimits.from_settings(BreakerSettings(consecutive_failures=None))
    assert lim.consecutive_failures == NEVER
    assert (lim.failure_rate, lim.slow_call_rate) == (0.5, 0.8)
