"""The retry budget on an injected clock: for any sequence of calls, retries and hedges granted
never exceed ``ratio`` * calls + ``min_per_s`` * seconds; credit follows *recent* calls."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.resilience import RetryBudget
from tests.support.fake_clock import FakeClock

# one step of traffic: time passes, then calls start and retries are asked for
_STEP = st.tuples(
    st.floats(min_value=0.0, max_value=3.0, allow_nan=False),  # seconds that pass
    st.integers(min_value=0, max_value=50),                    # calls that start
    st.integers(min_value=0, max_value=50),                    # retries asked for
)


@settings(max_examples=300, deadline=None)
@given(
    ratio=st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
    min_per_s=st.floats(min_value=0.0, max_value=100.0, allow_nan=False),
    ttl_s=st.floats(min_value=0.1, max_value=30.0, allow_nan=False),
    steps=st.lists(_STEP, max_size=60),
)
def test_retries_never_exceed_ratio_of_calls_plus_the_floor(
    ratio: float, min_per_s: float, ttl_s: float, steps: list[tuple[float, int, int]]
) -> None:
    clock = FakeClock()
    start = clock.now
    budget = RetryBudget(ratio, min_per_s, clock=clock, ttl_s=ttl_s)
    calls = asked = 0
    for seconds, new_calls, retries in steps:
        clock.advance(seconds)
        for _ in range(new_calls):
            budget.deposit()
        calls += new_calls
        for _ in range(retries):
            budget.try_withdraw()
        asked += retries
        elapsed = clock.now - start
        assert budget.granted <= ratio * calls + min_per_s * elapsed + 1e-9
        assert budget.granted + budget.exhausted == asked
        assert budget.available() >= 0
    assert budget.deposits == calls


def test_a_steady_failure_rate_under_the_ratio_is_always_retried() -> None:
    """At 500 calls/s with 10 % failing, a 0.2 budget never refuses a retry."""
    clock = FakeClock()
    budget = RetryBudget(0.2, 0.0, clock=clock)
    refused = 0
    for call in range(10_000):
        clock.advance(0.002)
        budget.deposit()
        if call % 10 == 9 and not budget.try_withdraw():
            refused += 1
    assert refused == 0
    assert budget.granted == 1000


def test_when_every_call_fails_retries_are_held_to_the_ratio() -> None:
    clock = FakeClock()
    budget = RetryBudget(0.2, 0.0, clock=clock)
    for _ in range(5_000):  # 10 s at 500 calls/s, each wanting two retries
        clock.advance(0.002)
        budget.deposit()
        budget.try_withdraw()
        budget.try_withdraw()
    assert budget.granted == pytest.approx(1000, abs=1)
    assert budget.exhausted == pytest.approx(9000, abs=1)


def test_credit_expires_after_the_ttl() -> None:
    clock = FakeClock()
    budget = RetryBudget(0.5, 0.0, clock=clock, ttl_s=10.0)
    for _ in range(100):
        budget.deposit()
    assert budget.available() == pytest.approx(50)
    clock.advance(5.0)
    assert budget.available() == pytest.approx(50)
    clock.advance(6.0)  # deposited 11 s ago: gone
    assert budget.available() == 0
    assert not budget.try_withdraw()


def test_the_floor_fills_at_min_per_s_up_to_one_second_of_tokens() -> None:
    clock = FakeClock()
    budget = RetryBudget(0.0, 10.0, clock=clock)
    assert not budget.try_withdraw()  # starts empty: a burst at start is not free
    clock.advance(0.35)
    assert [budget.try_withdraw() for _ in range(4)] == [True, True, True, False]
    clock.advance(60.0)  # a quiet minute banks one second's worth, not sixty
    granted = sum(budget.try_withdraw() for _ in range(30))
    assert granted == 10


def test_a_zero_budget_grants_nothing() -> None:
    clock = FakeClock()
    budget = RetryBudget(0.0, 0.0, clock=clock)
    for _ in range(100):
        clock.advance(0.1)
        budget.deposit()
        assert not budget.try_withdraw()
    assert budget.exhausted == 100


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"ratio": -0.1, "min_per_s": 1.0}, "ratio"),
    ({"ratio": 0.2, "min_per_s": -1.0}, "min_per_s"),
    ({"ratio": 0.2, "min_per_s": 1.0, "ttl_s": 0.0}, "ttl_s"),
])
def test_bad_settings_are_refused_naming_them(kwargs: dict[str, float], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        RetryBudget(clock=FakeClock(), **kwargs)  # type: ignore[arg-type]
