"""Sliding windows: running sums must always equal a naive recount of the same calls."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from sidecar.breaker import CountWindow, TimeWindow, WindowSnapshot
from tests.unit.breaker._support import FakeClock

Outcome = tuple[bool, bool]  # (failed, slow)

outcomes = st.tuples(st.booleans(), st.booleans())


def naive(calls: list[Outcome]) -> WindowSnapshot:
    """Recount from scratch: what the window should report for exactly these calls."""
    n = len(calls)
    failures = sum(1 for failed, _ in calls if failed)
    slow = sum(1 for _, is_slow in calls if is_slow)
    run = 0
    for failed, _ in reversed(calls):
        if not failed:
            break
        run += 1
    return WindowSnapshot(
        calls=n,
        failures=failures,
        slow_calls=slow,
        failure_rate=failures / n if n else 0.0,
        slow_call_rate=slow / n if n else 0.0,
        consecutive_failures=run,
    )


# --- count window ------------------------------------------------------------------------


@given(size=st.integers(1, 30), history=st.lists(outcomes, max_size=200))
def test_count_window_always_equals_a_recount_of_the_last_size_calls(
    size: int, history: list[Outcome]
) -> None:
    window = CountWindow(size)
    for i, (failed, slow) in enumerate(history):
        window.record(failed, slow)
        assert window.snapshot() == naive(history[: i + 1][-size:])
    assert window.windows_completed() == len(history) // size


@given(
    size=st.integers(1, 20),
    before=st.lists(outcomes, max_size=60),
    after=st.lists(outcomes, max_size=60),
)
def test_count_window_reset_forgets_everything_before_it(
    size: int, before: list[Outcome], after: list[Outcome]
) -> None:
    window = CountWindow(size)
    for failed, slow in before:
        window.record(failed, slow)
    window.reset()
    assert window.snapshot() == naive([])
    for failed, slow in after:
        window.record(failed, slow)
    assert window.snapshot() == naive(after[-size:])
    assert window.windows_completed() == len(after) // size


def test_count_window_failure_leaves_when_pushed_out_by_newer_calls() -> None:
    window = CountWindow(3)
    window.record(failed=True, slow=True)
    window.record(failed=False, slow=False)
    window.record(failed=False, slow=False)
    assert (window.snapshot().failures, window.snapshot().slow_calls) == (1, 1)
    window.record(failed=False, slow=False)
    assert (window.snapshot().failures, window.snapshot().slow_calls) == (0, 0)


# --- time window -------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    at: float
    failed: bool
    slow: bool


def naive_time(events: list[Event], now: float, seconds: float, buckets: int) -> WindowSnapshot:
    """Recount the calls whose bucket, floor(t / width), is among the last ``buckets`` at now."""
    width = seconds / buckets
    current = int(now // width)
    inside = [(e.failed, e.slow) for e in events if int(e.at // width) > current - buckets]
    return naive(inside)


# Gaps mix "same instant", "within a bucket", "across a few buckets" and "longer than the window".
gaps = st.one_of(
    st.just(0.0),
    st.floats(0.0, 0.5, allow_nan=False),
    st.floats(0.5, 5.0, allow_nan=False),
    st.floats(5.0, 40.0, allow_nan=False),
)


@given(
    seconds=st.sampled_from([1.0, 2.5, 10.0]),
    buckets=st.integers(1, 12),
    start=st.floats(0.0, 10_000.0, allow_nan=False),
    steps=st.lists(st.tuples(gaps, st.booleans(), st.booleans()), max_size=120),
    final_gap=gaps,
)
def test_time_window_always_equals_a_recount_of_the_calls_still_inside_it(
    seconds: float,
    buckets: int,
    start: float,
    steps: list[tuple[float, bool, bool]],
    final_gap: float,
) -> None:
    clock = FakeClock(start)
    window = TimeWindow(seconds, buckets, clock)
    events: list[Event] = []
    for gap, failed, slow in steps:
        clock.advance(gap)
        window.record(failed, slow)
        events.append(Event(clock.now, failed, slow))
        assert window.snapshot() == naive_time(events, clock.now, seconds, buckets)
    # Time passing with no calls must also age calls out (lazily, on the next read).
    clock.advance(final_gap)
    assert window.snapshot() == naive_time(events, clock.now, seconds, buckets)


@given(
    buckets=st.integers(1, 10),
    start=st.floats(0.0, 1000.0, allow_nan=False),
    elapsed=st.floats(0.0, 100.0, allow_nan=False),
)
def test_time_window_counts_completed_windows_of_time_since_reset(
    buckets: int, start: float, elapsed: float
) -> None:
    clock = FakeClock(start)
    window = TimeWindow(10.0, buckets, clock)
    width = 10.0 / buckets
    clock.advance(elapsed)
    expected = (int(clock.now // width) - int(start // width)) // buckets
    assert window.windows_completed() == expected


def test_time_window_drops_everything_after_an_idle_gap_longer_than_the_window() -> None:
    clock = FakeClock(0.0)
    window = TimeWindow(10.0, 10, clock)
    for _ in range(5):
        window.record(failed=True, slow=False)
    clock.advance(10.0)
    assert window.snapshot() == naive([])


def test_time_window_consecutive_failures_only_count_calls_still_inside_it() -> None:
    clock = FakeClock(0.0)
    window = TimeWindow(10.0, 10, clock)
    window.record(failed=True, slow=False)
    clock.advance(30.0)
    window.record(failed=True, slow=False)
    assert window.snapshot().consecutive_failures == 1
