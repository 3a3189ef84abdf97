"""The breaker decides to trip exactly as a hand-written reference does, call after call.

The reference keeps every outcome in a plain list, judges the window by filtering it, and
decides with the breaker's trip logic written out in one function: judged after every call
while the window holds a failure or a slow call; failure rate, then slow-call rate (both from
``minimum_calls`` on), then consecutive failures (even below it); ``minimum_calls`` and
``consecutive_failures`` clamped to a count window's size. Random call sequences on a fake
clock, with time passing, ``view()`` reads (which age a time window), settings reloads and
mode switches in between, must give the same trips, for the same reasons, on the same call,
with the same window snapshot.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.breaker import BreakerSettings, CircuitBreaker, Mode, State, WindowSnapshot
from tests.unit.breaker._support import FakeClock, Recorder, call, calls, make_breaker

SLOW_S, FAST_S = 1.0, 0.001  # slow_call_ms stays at its default, 500 ms


class ReferenceWindow:
    """Every outcome since the last reset; the window is whatever the filter keeps."""

    def __init__(self, settings: BreakerSettings, clock: FakeClock) -> None:
        self.settings = settings
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        self.outcomes: list[tuple[int, bool, bool]] = []  # (bucket epoch, failed, slow)
        self.run = 0  # failures in a row since the reset
        self.head = self._epoch()

    def _epoch(self) -> int:
        s = self.settings
        return int(self.clock() // (s.window_seconds / s.window_buckets))

    def advance(self) -> None:
        """Time moves the newest bucket on (reading a time window does this too)."""
        if self.settings.window_type == "time":
            self.head = max(self.head, self._epoch())

    def record(self, failed: bool, slow: bool) -> None:
        self.advance()
        self.outcomes.append((self.head, failed, slow))
        self.run = self.run + 1 if failed else 0

    def inside(self) -> list[tuple[int, bool, bool]]:
        s = self.settings
        if s.window_type == "count":
            return self.outcomes[-s.window_size :]
        return [o for o in self.outcomes if o[0] > self.head - s.window_buckets]

    def counts(self) -> tuple[int, int, int]:
        kept = self.inside()
        return len(kept), sum(o[1] for o in kept), sum(o[2] for o in kept)

    def snapshot(self) -> WindowSnapshot:
        self.advance()
        n, failures, slow = self.counts()
        if n == 0:
            return WindowSnapshot(0, 0, 0, 0.0, 0.0, 0)
        return WindowSnapshot(n, failures, slow, failures / n, slow / n, min(self.run, n))


def reference_reason(
    window: ReferenceWindow, settings: BreakerSettings, failed: bool
) -> str | None:
    """The breaker's trip decision after one recorded call, written out in one place."""
    n, failures, slow = window.counts()
    if not (failed or failures or slow):
        return None
    count = settings.window_type == "count"
    size = settings.window_size
    minimum = min(settings.minimum_calls, size) if count else settings.minimum_calls
    in_a_row = settings.consecutive_failures
    if in_a_row is not None and count:
        in_a_row = min(in_a_row, size)
    run_trips = failed and in_a_row is not None and min(window.run, n) >= in_a_row
    if n >= minimum:
        if failures and failures / n >= settings.failure_rate:
            return "failure_rate"
        if slow and slow / n >= settings.slow_call_rate:
            return "slow_call_rate"
    return "consecutive_failures" if run_trips else None


rates = st.sampled_from([0.1, 0.25, 1 / 3, 0.5, 0.5, 0.6, 2 / 3, 0.8, 1.0])
thresholds = st.fixed_dictionaries(
    {
        "minimum_calls": st.integers(1, 8),
        "failure_rate": rates,
        "slow_call_rate": rates,
        "consecutive_failures": st.one_of(st.none(), st.integers(1, 14)),
    }
)
window_shapes = st.one_of(
    st.fixed_dictionaries({"window_type": st.just("count"), "window_size": st.integers(1, 12)}),
    st.fixed_dictionaries(
        {
            "window_type": st.just("time"),
            "window_seconds": st.sampled_from([1.0, 2.0, 5.0]),
            "window_buckets": st.integers(1, 4),
        }
    ),
)
operations = st.lists(
    st.one_of(
        # (calls, n, failed, slow): runs of like calls, so windows fill and rates build up
        st.tuples(st.just("calls"), st.integers(1, 3), st.booleans(), st.booleans()),
        st.tuples(st.just("calls"), st.integers(1, 6), st.just(False), st.just(False)),
        # ("advance", buckets): time in bucket widths of a time window (1 s for count windows)
        st.tuples(st.just("advance"), st.sampled_from([0.0, 0.3, 1.0, 1.5, 2.0, 3.0, 6.0])),
        st.tuples(st.just("view")),
        st.tuples(st.just("reload"), thresholds),
        st.tuples(st.just("mode"), st.sampled_from([Mode.ENFORCE, Mode.METRICS_ONLY])),
    ),
    min_size=10,
    max_size=60,
)


@given(shape=window_shapes, first=thresholds, ops=operations)
def test_the_breaker_trips_exactly_when_the_reference_does(
    shape: dict[str, Any], first: dict[str, Any], ops: list[tuple[Any, ...]]
) -> None:
    check_against_the_reference(shape, first, ops)


@st.composite
def bucket_by_bucket(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """Operations filling a time window bucket by bucket: some healthy calls, some failed or
    slow ones, then time moves on by one bucket (sometimes read in between)."""
    ops: list[tuple[Any, ...]] = []
    for _ in range(draw(st.integers(2, 12))):
        healthy = ("calls", draw(st.integers(0, 6)), False, False)
        bad = ("calls", draw(st.integers(0, 2)), draw(st.booleans()), draw(st.booleans()))
        ops += [healthy, bad] if draw(st.booleans()) else [bad, healthy]
        if draw(st.booleans()):
            ops.append(("view",))
        ops.append(("advance", draw(st.sampled_from([1.0, 1.0, 2.0]))))
    return ops


@settings(max_examples=300)
@given(
    shape=st.fixed_dictionaries(
        {
            "window_type": st.just("time"),
            "window_seconds": st.just(4.0),
            "window_buckets": st.integers(2, 4),
        }
    ),
    first=thresholds,
    ops=bucket_by_bucket(),
)
def test_the_breaker_trips_as_the_reference_does_while_calls_age_out_of_a_time_window(
    shape: dict[str, Any], first: dict[str, Any], ops: list[tuple[Any, ...]]
) -> None:
    """Old healthy calls leaving while newer failures stay raise the rate with no new failure."""
    check_against_the_reference(shape, first, ops)


def check_against_the_reference(
    shape: dict[str, Any], first: dict[str, Any], ops: list[tuple[Any, ...]]
) -> None:
    clock = FakeClock()
    settings = BreakerSettings(open_jitter=0.0, **shape, **first)
    breaker = CircuitBreaker(
        "payments", settings, clock=clock, wall_clock=clock.wall, rng=random.Random(0)
    )
    recorder = Recorder()
    breaker.add_listener(recorder)
    reference = ReferenceWindow(settings, clock)
    mode = Mode.ENFORCE
    for step, op in enumerate(ops):
        kind = op[0]
        if kind == "calls":
            _, n, failed, slow = op
            for i in range(n):
                heard = len(recorder.transitions)
                permit = breaker.try_acquire()
                assert permit is not None
                breaker.record(permit, SLOW_S if slow else FAST_S, failed)
                reference.record(failed, slow)
                expected = reference_reason(reference, settings, failed)
                new = recorder.transitions[heard:]
                assert (new[0].reason if new else None) == expected, f"step {step}.{i}: {op}"
                if new:
                    assert new[0].snapshot == reference.snapshot()
                    # Re-arm: out of the path and back, which empties the window (CLOSED again).
                    breaker.set_mode(Mode.DISABLED)
                    breaker.set_mode(mode)
                    reference.reset()
                assert breaker.state is State.CLOSED
        elif kind == "advance":
            clock.advance(op[1] * settings.window_seconds / settings.window_buckets)
        elif kind == "view":
            assert breaker.view().snapshot == reference.snapshot()
        elif kind == "reload":
            settings = dataclasses.replace(settings, **op[1])
            breaker.update_settings(settings)
            reference.settings = settings
        else:
            mode = op[1]
            breaker.set_mode(mode)


# --- the calls the breaker's fast path must not skip, one by one ---------------------------


def test_the_healthy_call_that_reaches_minimum_calls_is_judged() -> None:
    breaker, _, recorder = make_breaker(minimum_calls=4, consecutive_failures=None)
    calls(breaker, 3, failed=True)
    assert breaker.state is State.CLOSED  # 3 calls: not judged yet
    call(breaker)
    assert recorder.reasons == ["failure_rate"]  # 3 of 4, on a healthy call


def test_the_healthy_call_that_fills_a_count_window_as_large_as_minimum_calls_is_judged() -> None:
    breaker, _, recorder = make_breaker(
        window_size=4, minimum_calls=4, failure_rate=0.25, consecutive_failures=None
    )
    call(breaker, failed=True)
    calls(breaker, 2)
    assert breaker.state is State.CLOSED
    call(breaker)  # fills the window: 1 of 4
    assert recorder.reasons == ["failure_rate"]


def test_a_healthy_call_is_judged_after_calls_aged_out_of_a_time_window() -> None:
    breaker, clock, recorder = make_breaker(
        window_type="time", window_seconds=10.0, window_buckets=10, minimum_calls=4,
        failure_rate=0.5, consecutive_failures=None,
    )
    calls(breaker, 6)  # healthy, in the oldest bucket
    clock.advance(5.0)
    calls(breaker, 3, failed=True)  # 3 of 9: no trip
    clock.advance(5.5)  # the 6 healthy calls age out
    assert breaker.view().snapshot.calls == 3  # the read ages the window, nothing trips
    assert breaker.state is State.CLOSED
    call(breaker)  # 3 of 4 failed, on a healthy call
    assert recorder.reasons == ["failure_rate"]


def test_a_healthy_call_is_judged_under_thresholds_reloaded_since_the_last_call() -> None:
    breaker, _, recorder = make_breaker(failure_rate=0.5, consecutive_failures=None)
    calls(breaker, 7)
    calls(breaker, 3, failed=True)  # 3 of 10
    breaker.update_settings(BreakerSettings(failure_rate=0.25, consecutive_failures=None))
    assert breaker.state is State.CLOSED  # a reload judges nothing by itself
    call(breaker)  # 3 of 11 >= 0.25
    assert recorder.reasons == ["failure_rate"]
