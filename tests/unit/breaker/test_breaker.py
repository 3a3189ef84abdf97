"""The breaker's state machine on a fake clock: one test per rule of docs/breaker.md.

Three tests pin the defects of the seed's sample breaker:
- test_failures_separated_by_many_successes_never_add_up_to_a_trip (it counted failures forever)
- test_half_open_never_admits_more_than_half_open_probes_callers_under_concurrency
  (it let unlimited probes through)
- test_open_duration_grows_with_consecutive_trips_and_shrinks_with_health
  (it reset the timeout to a constant)
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.breaker import (
    BreakerListener,
    BreakerSettings,
    CircuitBreaker,
    Mode,
    ModeChange,
    Permit,
    State,
    Transition,
)
from tests.unit.breaker._support import WALL_OFFSET, FakeClock, call, calls, make_breaker

# --- windows and trips ---------------------------------------------------------------------


def test_failures_separated_by_many_successes_never_add_up_to_a_trip() -> None:
    breaker, _, recorder = make_breaker(window_size=20, minimum_calls=10, failure_rate=0.5)
    for _ in range(100):  # 100 failures in total, but never more than 1 in any 20 calls
        calls(breaker, 1, failed=True)
        calls(breaker, 19)
    assert breaker.state is State.CLOSED
    assert recorder.transitions == []


def test_failures_further_apart_than_the_time_window_never_add_up_to_a_trip() -> None:
    breaker, clock, recorder = make_breaker(
        window_type="time", window_seconds=10.0, minimum_calls=2, consecutive_failures=3
    )
    for _ in range(50):
        assert call(breaker, failed=True)
        clock.advance(11.0)
    assert breaker.state is State.CLOSED
    assert recorder.transitions == []


def test_time_window_trips_when_failures_crowd_into_window_seconds() -> None:
    breaker, clock, recorder = make_breaker(
        window_type="time", window_seconds=10.0, minimum_calls=4, consecutive_failures=None
    )
    for _ in range(20):  # healthy traffic long ago ages out of the window
        call(breaker)
        clock.advance(1.0)
    clock.advance(10.0)
    calls(breaker, 2)
    calls(breaker, 2, failed=True)
    assert breaker.state is State.OPEN
    assert recorder.transitions[0].snapshot.calls == 4


def test_failure_rate_reaching_the_threshold_trips_the_breaker() -> None:
    breaker, _, recorder = make_breaker(
        minimum_calls=10, failure_rate=0.5, consecutive_failures=None
    )
    for _ in range(5):
        call(breaker)
        call(breaker, failed=True)
    assert breaker.state is State.OPEN
    (trip,) = recorder.transitions
    assert (trip.from_state, trip.to_state) == (State.CLOSED, State.OPEN)
    assert trip.reason == "failure_rate"
    assert (trip.snapshot.calls, trip.snapshot.failures, trip.snapshot.failure_rate) == (10, 5, 0.5)


def test_rates_are_not_judged_before_minimum_calls() -> None:
    breaker, _, recorder = make_breaker(minimum_calls=10, consecutive_failures=None)
    calls(breaker, 9, failed=True)  # 100% failures, but only 9 calls
    assert breaker.state is State.CLOSED
    call(breaker)  # the 10th call, a success, makes the 90% failure rate count
    assert breaker.view().state is State.OPEN
    assert recorder.reasons == ["failure_rate"]


def test_calls_slower_than_slow_call_ms_trip_on_the_slow_call_rate() -> None:
    breaker, _, recorder = make_breaker(minimum_calls=5, slow_call_ms=100.0, slow_call_rate=0.8)
    calls(breaker, 1, duration_s=0.01)
    calls(breaker, 3, duration_s=0.2)
    assert breaker.state is State.CLOSED  # 4 calls: below minimum_calls
    calls(breaker, 1, duration_s=0.2)  # 4 of 5 slow = 0.8
    assert breaker.view().state is State.OPEN
    assert recorder.reasons == ["slow_call_rate"]
    assert recorder.transitions[0].snapshot.slow_call_rate == 0.8


def test_a_call_taking_exactly_slow_call_ms_is_not_slow() -> None:
    breaker, _, _ = make_breaker(slow_call_ms=100.0)
    call(breaker, duration_s=0.1)
    assert breaker.view().snapshot.slow_calls == 0


def test_consecutive_failures_trip_below_minimum_calls() -> None:
    breaker, _, recorder = make_breaker(minimum_calls=10, consecutive_failures=3)
    calls(breaker, 2, failed=True)
    call(breaker)  # a success breaks the run
    calls(breaker, 2, failed=True)
    assert breaker.state is State.CLOSED
    call(breaker, failed=True)
    assert breaker.view().state is State.OPEN
    (trip,) = recorder.transitions
    assert trip.reason == "consecutive_failures"
    assert (trip.snapshot.calls, trip.snapshot.consecutive_failures) == (6, 3)


def test_consecutive_failures_set_to_none_turns_that_trigger_off() -> None:
    breaker, _, _ = make_breaker(minimum_calls=10, consecutive_failures=None)
    calls(breaker, 9, failed=True)
    assert breaker.state is State.CLOSED


def test_outcomes_of_calls_admitted_before_a_trip_are_ignored_after_it() -> None:
    breaker, _, _ = make_breaker(consecutive_failures=2, minimum_calls=100)
    late = breaker.try_acquire()
    assert late is not None
    calls(breaker, 2, failed=True)
    assert breaker.state is State.OPEN
    before = breaker.view().snapshot
    breaker.record(late, 0.001, failed=True)
    assert breaker.view().snapshot == before


# --- OPEN ----------------------------------------------------------------------------------


def test_open_breaker_rejects_until_its_open_duration_elapses() -> None:
    breaker, clock, recorder = make_breaker(consecutive_failures=1, open_base_ms=1000.0)
    call(breaker, failed=True)
    assert breaker.try_acquire() is None
    assert breaker.retry_after_s() == pytest.approx(1.0)
    clock.advance(0.6)
    assert breaker.try_acquire() is None
    assert breaker.retry_after_s() == pytest.approx(0.4)
    clock.advance(0.4)
    permit = breaker.try_acquire()
    assert permit is not None and permit.probe
    assert breaker.state is State.HALF_OPEN
    assert recorder.reasons == ["consecutive_failures", "open_elapsed"]


def test_retry_after_is_zero_unless_open() -> None:
    breaker, clock, _ = make_breaker(consecutive_failures=1)
    assert breaker.retry_after_s() == 0.0
    call(breaker, failed=True)
    clock.advance(5.0)
    breaker.try_acquire()  # HALF_OPEN now
    assert breaker.retry_after_s() == 0.0


def test_view_of_an_open_breaker_shows_when_it_reopens_on_the_wall_clock() -> None:
    breaker, clock, _ = make_breaker(consecutive_failures=1, open_base_ms=2000.0)
    call(breaker, failed=True)
    view = breaker.view()
    assert view.state is State.OPEN
    assert view.open_until_wall == pytest.approx(clock.now + WALL_OFFSET + 2.0)
    assert view.open_duration_s == pytest.approx(2.0)
    assert view.trip_streak == 1
    assert view.last_transition is not None
    assert view.last_transition.reason == "consecutive_failures"


# --- adaptive open duration ----------------------------------------------------------------


def _fail_probe(breaker: CircuitBreaker, clock: FakeClock) -> None:
    clock.advance(breaker.retry_after_s())
    assert call(breaker, failed=True)


def _close_with_healthy_probes(breaker: CircuitBreaker, clock: FakeClock) -> None:
    clock.advance(breaker.retry_after_s())
    calls(breaker, breaker.settings.half_open_probes)
    assert breaker.state is State.CLOSED


def test_open_duration_grows_with_consecutive_trips_and_shrinks_with_health() -> None:
    breaker, clock, recorder = make_breaker(
        window_size=20, consecutive_failures=1, open_base_ms=1000.0, open_multiplier=2.0,
        streak_decay_ms=30_000.0,
    )
    call(breaker, failed=True)
    for _ in range(3):
        _fail_probe(breaker, clock)
    assert recorder.open_durations == [1.0, 2.0, 4.0, 8.0]  # grows: not a constant timeout

    _close_with_healthy_probes(breaker, clock)
    assert breaker.view().trip_streak == 4  # closing alone is not a hard reset
    calls(breaker, 1000)  # many clean windows of calls, but no time: no decay
    assert breaker.view().trip_streak == 4
    clock.advance(60.0)  # two streak_decay_ms periods CLOSED: two steps off the streak
    assert breaker.view().trip_streak == 2
    call(breaker, failed=True)
    assert recorder.open_durations[-1] == 4.0  # streak 3: shorter than 16 s, longer than 1 s


def test_open_duration_is_capped_at_open_max_ms() -> None:
    breaker, clock, recorder = make_breaker(
        consecutive_failures=1, open_base_ms=1000.0, open_max_ms=5000.0
    )
    call(breaker, failed=True)
    for _ in range(4):
        _fail_probe(breaker, clock)
    assert recorder.open_durations == [1.0, 2.0, 4.0, 5.0, 5.0]


@given(seed=st.integers(0, 2**32 - 1), jitter=st.floats(0.0, 0.9))
def test_jittered_open_durations_stay_within_bounds(seed: int, jitter: float) -> None:
    breaker, clock, recorder = make_breaker(
        seed=seed, consecutive_failures=1, open_jitter=jitter, open_max_ms=6000.0
    )
    call(breaker, failed=True)
    for _ in range(4):
        _fail_probe(breaker, clock)
    for streak, duration in enumerate(recorder.open_durations, start=1):
        base = min(6.0, 1.0 * 2.0 ** (streak - 1))
        assert base * (1 - jitter) - 1e-9 <= duration <= min(6.0, base * (1 + jitter)) + 1e-9


# --- HALF_OPEN -----------------------------------------------------------------------------


def _half_open(**overrides: Any) -> tuple[CircuitBreaker, FakeClock, list[Transition]]:
    breaker, clock, recorder = make_breaker(consecutive_failures=1, **overrides)
    call(breaker, failed=True)
    clock.advance(breaker.retry_after_s())
    return breaker, clock, recorder.transitions


def test_half_open_admits_at_most_half_open_probes_and_rejects_the_rest() -> None:
    breaker, _, _ = _half_open(half_open_probes=3)
    permits = [breaker.try_acquire() for _ in range(10)]
    admitted = [p for p in permits if p is not None]
    assert len(admitted) == 3 and all(p.probe for p in admitted)
    assert breaker.view().half_open_in_flight == 3


def test_half_open_never_admits_more_than_half_open_probes_callers_under_concurrency() -> None:
    breaker, _, _ = _half_open(half_open_probes=3)
    threads_n, tries = 50, 200
    barrier = threading.Barrier(threads_n)
    admitted: list[Permit] = []
    admitted_lock = threading.Lock()

    def hammer() -> None:
        barrier.wait()
        for _ in range(tries):
            permit = breaker.try_acquire()
            if permit is not None:
                with admitted_lock:
                    admitted.append(permit)

    workers = [threading.Thread(target=hammer) for _ in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(admitted) == 3
    assert breaker.state is State.HALF_OPEN


def test_half_open_concurrent_probes_stay_within_the_limit_while_slots_are_recycled() -> None:
    breaker, _, _ = _half_open(half_open_probes=2)
    threads_n, tries = 50, 100
    barrier = threading.Barrier(threads_n)
    in_flight = peak = total = 0
    count_lock = threading.Lock()

    def hammer() -> None:
        nonlocal in_flight, peak, total
        barrier.wait()
        for _ in range(tries):
            permit = breaker.try_acquire()
            if permit is None:
                continue
            with count_lock:
                in_flight += 1
                total += 1
                peak = max(peak, in_flight)
            with count_lock:
                in_flight -= 1
            breaker.release(permit)  # no outcome: the slot frees, HALF_OPEN continues

    workers = [threading.Thread(target=hammer) for _ in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert 1 <= peak <= 2
    assert total >= 2
    assert breaker.state is State.HALF_OPEN


def test_healthy_probes_close_the_breaker_with_an_empty_window() -> None:
    breaker, _, transitions = _half_open(half_open_probes=3)
    probes = [breaker.try_acquire() for _ in range(3)]
    for p in probes[:2]:
        assert p is not None
        breaker.record(p, 0.001, failed=False)
    assert breaker.state is State.HALF_OPEN
    assert probes[2] is not None
    breaker.record(probes[2], 0.001, failed=False)
    assert breaker.view().state is State.CLOSED
    closing = transitions[-1]
    assert (closing.from_state, closing.to_state, closing.reason) == (
        State.HALF_OPEN, State.CLOSED, "probes_healthy",
    )
    assert closing.snapshot.calls == 3 and closing.snapshot.failures == 0
    assert breaker.view().snapshot.calls == 0
    assert breaker.try_acquire() is not None


def test_a_failed_probe_reopens_the_breaker_for_longer() -> None:
    breaker, _, transitions = _half_open()
    probe = breaker.try_acquire()
    assert probe is not None
    breaker.record(probe, 0.001, failed=True)
    assert breaker.state is State.OPEN
    reopen = transitions[-1]
    assert (reopen.from_state, reopen.reason, reopen.trip_streak) == (
        State.HALF_OPEN, "probe_failed", 2,
    )
    assert reopen.open_duration_s == pytest.approx(2.0)
    assert breaker.try_acquire() is None


def test_a_slow_probe_reopens_the_breaker() -> None:
    breaker, _, transitions = _half_open(slow_call_ms=100.0)
    probe = breaker.try_acquire()
    assert probe is not None
    breaker.record(probe, 0.5, failed=False)
    assert breaker.state is State.OPEN
    assert transitions[-1].reason == "probe_slow"
    assert transitions[-1].snapshot.slow_calls == 1


def test_a_probe_that_never_reports_frees_its_slot_after_the_probe_timeout() -> None:
    breaker, clock, _ = _half_open(half_open_probes=1, probe_timeout_ms=5000.0)
    stuck = breaker.try_acquire()
    assert stuck is not None
    clock.advance(4.9)
    assert breaker.try_acquire() is None
    clock.advance(0.1)
    assert breaker.view().half_open_in_flight == 0
    fresh = breaker.try_acquire()
    assert fresh is not None and fresh.probe
    breaker.record(stuck, 0.001, failed=True)  # too late: its slot was reclaimed
    assert breaker.state is State.HALF_OPEN
    breaker.record(fresh, 0.001, failed=False)
    assert breaker.view().state is State.CLOSED


def test_a_released_probe_frees_its_slot_without_counting() -> None:
    breaker, _, _ = _half_open(half_open_probes=1)
    probe = breaker.try_acquire()
    assert probe is not None
    breaker.release(probe)
    assert breaker.state is State.HALF_OPEN
    assert breaker.view().snapshot.calls == 0
    assert breaker.try_acquire() is not None


def test_a_probe_from_an_earlier_half_open_period_is_ignored() -> None:
    breaker, clock, _ = _half_open(half_open_probes=2)
    old, failing = breaker.try_acquire(), breaker.try_acquire()
    assert old is not None and failing is not None
    breaker.record(failing, 0.001, failed=True)  # back to OPEN
    clock.advance(breaker.retry_after_s())
    assert breaker.try_acquire() is not None  # a new HALF_OPEN period
    breaker.record(old, 0.001, failed=False)
    assert breaker.view().snapshot.calls == 0


# --- modes ---------------------------------------------------------------------------------


def test_metrics_only_never_rejects_but_still_notifies_transitions() -> None:
    breaker, clock, recorder = make_breaker(
        mode=Mode.METRICS_ONLY, consecutive_failures=2, half_open_probes=1
    )
    assert calls(breaker, 2, failed=True) == 2
    assert breaker.state is State.OPEN
    assert calls(breaker, 50, failed=True) == 50  # would have been rejected under enforce
    clock.advance(breaker.retry_after_s())
    probe = breaker.try_acquire()
    extra = breaker.try_acquire()
    assert probe is not None and probe.probe
    assert extra is not None and not extra.probe  # admitted, but not as a probe
    breaker.record(probe, 0.001, failed=False)
    assert recorder.reasons == ["consecutive_failures", "open_elapsed", "probes_healthy"]
    assert all(t.mode is Mode.METRICS_ONLY for t in recorder.transitions)


def test_disabled_admits_everything_records_nothing_and_never_trips() -> None:
    breaker, _, recorder = make_breaker(mode=Mode.DISABLED, consecutive_failures=1)
    assert calls(breaker, 100, failed=True) == 100
    assert breaker.state is State.CLOSED
    assert breaker.view().snapshot.calls == 0
    assert recorder.transitions == []


def test_disabling_an_open_breaker_closes_it() -> None:
    breaker, _, recorder = make_breaker(consecutive_failures=1)
    call(breaker, failed=True)
    breaker.set_mode(Mode.DISABLED)
    assert breaker.state is State.CLOSED
    assert recorder.transitions[-1].reason == "mode_changed"
    assert breaker.try_acquire() is not None


def test_forced_open_rejects_everything() -> None:
    breaker, clock, recorder = make_breaker()
    breaker.set_mode(Mode.FORCED_OPEN)
    assert breaker.state is State.OPEN
    assert recorder.transitions[-1].reason == "forced_open"
    clock.advance(3600.0)
    assert all(breaker.try_acquire() is None for _ in range(100))
    assert breaker.retry_after_s() == pytest.approx(60.0)  # open_max_ms as a back-off hint
    assert breaker.view().open_until_wall is None


def test_a_breaker_configured_forced_open_starts_open_and_rejects() -> None:
    breaker, _, _ = make_breaker(mode=Mode.FORCED_OPEN)
    assert breaker.state is State.OPEN
    assert breaker.try_acquire() is None
    breaker.set_mode(Mode.ENFORCE)
    permit = breaker.try_acquire()
    assert permit is not None and permit.probe


def test_forcing_open_is_not_a_trip() -> None:
    breaker, _, recorder = make_breaker()
    breaker.set_mode(Mode.FORCED_OPEN)
    assert breaker.view().trip_streak == 0
    assert recorder.transitions[-1].trip_streak == 0


def test_leaving_forced_open_lets_the_next_call_probe() -> None:
    breaker, _, recorder = make_breaker()
    breaker.set_mode(Mode.FORCED_OPEN)
    breaker.set_mode(Mode.ENFORCE)
    permit = breaker.try_acquire()
    assert permit is not None and permit.probe
    assert recorder.reasons == ["forced_open", "open_elapsed"]


def test_set_mode_tells_listeners_who_changed_it_and_ignores_no_op_changes() -> None:
    breaker, clock, recorder = make_breaker()
    breaker.set_mode(Mode.METRICS_ONLY, source="admin")
    breaker.set_mode(Mode.METRICS_ONLY, source="admin")
    (change,) = recorder.mode_changes
    assert (change.breaker, change.from_mode, change.to_mode, change.source) == (
        "payments", Mode.ENFORCE, Mode.METRICS_ONLY, "admin",
    )
    assert change.at_wall == clock.wall()
    assert recorder.transitions == []


def test_switching_between_enforce_and_metrics_only_keeps_the_window() -> None:
    breaker, _, _ = make_breaker()
    calls(breaker, 4, failed=True)
    breaker.set_mode(Mode.METRICS_ONLY)
    assert breaker.view().snapshot.failures == 4


# --- listeners -----------------------------------------------------------------------------


def test_listener_receives_from_to_reason_snapshot_open_duration_streak_and_time() -> None:
    breaker, clock, recorder = make_breaker(
        minimum_calls=4, failure_rate=0.5, consecutive_failures=None, open_base_ms=1500.0
    )
    calls(breaker, 2)
    calls(breaker, 2, failed=True)
    (trip,) = recorder.transitions
    assert trip.breaker == "payments"
    assert (trip.from_state, trip.to_state) == (State.CLOSED, State.OPEN)
    assert trip.reason == "failure_rate"
    assert (trip.snapshot.calls, trip.snapshot.failures, trip.snapshot.failure_rate) == (4, 2, 0.5)
    assert trip.snapshot.slow_call_rate == 0.0
    assert trip.open_duration_s == pytest.approx(1.5)
    assert trip.trip_streak == 1
    assert trip.mode is Mode.ENFORCE
    assert (trip.at_monotonic, trip.at_wall) == (clock.now, clock.wall())


def test_transitions_that_do_not_open_carry_no_open_duration() -> None:
    breaker, _, transitions = _half_open(half_open_probes=1)
    probe = breaker.try_acquire()
    assert probe is not None
    breaker.record(probe, 0.001, failed=False)
    assert [t.open_duration_s for t in transitions[1:]] == [0.0, 0.0]


@pytest.mark.timeout(10)
def test_listener_runs_outside_the_lock_and_may_read_the_breaker() -> None:
    breaker, _, _ = make_breaker(consecutive_failures=1)
    seen: list[tuple[State, float]] = []

    class ReadsBack(BreakerListener):
        def on_transition(self, transition: Transition) -> None:
            # With the breaker's (non-reentrant) lock still held, this would deadlock.
            seen.append((breaker.view().state, breaker.retry_after_s()))

        def on_mode_change(self, change: ModeChange) -> None:
            seen.append((breaker.view().state, -1.0))

    breaker.add_listener(ReadsBack())
    call(breaker, failed=True)
    breaker.set_mode(Mode.FORCED_OPEN)
    assert len(seen) == 2
    assert seen[0][0] is State.OPEN and seen[0][1] == pytest.approx(1.0)
    assert seen[1] == (State.OPEN, -1.0)


async def test_listener_sees_the_contextvars_of_the_asyncio_task_that_caused_it() -> None:
    breaker, _, _ = make_breaker(consecutive_failures=3, minimum_calls=100)
    current_call: contextvars.ContextVar[str] = contextvars.ContextVar("current_call")
    heard: list[str] = []

    class ReadsContext(BreakerListener):
        def on_transition(self, transition: Transition) -> None:
            heard.append(current_call.get())

    breaker.add_listener(ReadsContext())

    async def one_call(name: str, failed: bool) -> None:
        current_call.set(name)
        permit = breaker.try_acquire()
        await asyncio.sleep(0)  # interleave the tasks between acquire and record
        if permit is not None:
            breaker.record(permit, 0.001, failed)

    await asyncio.gather(one_call("a", True), one_call("b", True))
    await one_call("c", True)  # the third failure in a row trips, inside task "c"
    assert heard == ["c"]


def test_a_failing_listener_does_not_break_the_call_or_other_listeners() -> None:
    breaker, _, recorder = make_breaker(consecutive_failures=1)

    class Broken(BreakerListener):
        def on_transition(self, transition: Transition) -> None:
            raise RuntimeError("exporter down")

    breaker.remove_listener(recorder)
    breaker.add_listener(Broken())
    breaker.add_listener(recorder)
    assert call(breaker, failed=True)
    assert recorder.reasons == ["consecutive_failures"]


def test_a_removed_listener_hears_nothing_more() -> None:
    breaker, _, recorder = make_breaker(consecutive_failures=1)
    breaker.remove_listener(recorder)
    call(breaker, failed=True)
    assert recorder.transitions == []


# --- reload --------------------------------------------------------------------------------


def test_update_settings_keeps_state_streak_and_window() -> None:
    breaker, _, recorder = make_breaker(consecutive_failures=1, minimum_calls=10)
    call(breaker, failed=True)
    breaker.update_settings(
        BreakerSettings(consecutive_failures=1, open_jitter=0.0, minimum_calls=3)
    )
    assert breaker.state is State.OPEN
    assert breaker.view().trip_streak == 1
    assert breaker.view().snapshot.failures == 1
    assert breaker.settings.minimum_calls == 3
    assert len(recorder.transitions) == 1


def test_update_settings_applies_new_thresholds_to_the_kept_window() -> None:
    breaker, _, _ = make_breaker(minimum_calls=10, consecutive_failures=None)
    calls(breaker, 4, failed=True)
    breaker.update_settings(BreakerSettings(minimum_calls=5, consecutive_failures=None))
    call(breaker)
    assert breaker.state is State.OPEN  # 4 of 5 failed, judged with the new minimum_calls


def test_update_settings_with_a_new_window_shape_starts_an_empty_window() -> None:
    breaker, _, _ = make_breaker(window_size=20)
    calls(breaker, 4, failed=True)
    breaker.update_settings(BreakerSettings(window_type="time"))
    assert breaker.view().snapshot.calls == 0
    call(breaker, failed=True)
    assert breaker.view().snapshot.calls == 1


def test_update_settings_changes_mode_only_when_the_config_changed_it() -> None:
    breaker, _, recorder = make_breaker()
    breaker.set_mode(Mode.FORCED_OPEN, source="admin")
    breaker.update_settings(BreakerSettings(failure_rate=0.3))  # mode not changed by the reload
    assert breaker.mode is Mode.FORCED_OPEN
    breaker.update_settings(BreakerSettings(failure_rate=0.3, mode=Mode.METRICS_ONLY))
    assert breaker.view().mode is Mode.METRICS_ONLY
    assert recorder.mode_changes[-1].source == "config"


# --- threads in CLOSED ---------------------------------------------------------------------


def test_records_from_many_threads_are_all_counted() -> None:
    breaker = CircuitBreaker(
        "payments",
        BreakerSettings(window_size=100_000, minimum_calls=100_000, consecutive_failures=None),
        rng=random.Random(0),
    )
    threads_n, per_thread = 8, 2000
    barrier = threading.Barrier(threads_n)

    def work(failed: bool) -> None:
        barrier.wait()
        for _ in range(per_thread):
            permit = breaker.try_acquire()
            assert permit is not None
            breaker.record(permit, 0.0, failed)

    workers = [threading.Thread(target=work, args=(i % 2 == 0,)) for i in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    snapshot = breaker.view().snapshot
    assert snapshot.calls == threads_n * per_thread
    assert snapshot.failures == threads_n * per_thread // 2
