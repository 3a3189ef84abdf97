"""Random operation sequences: the breaker's invariants hold whatever callers and operators do.

Each invariant checks the breaker against numbers computed here from the settings and what
the listeners heard (open duration from the streak, streak changes from trips and time CLOSED),
not against bounds the implementation guarantees by construction.
"""

from __future__ import annotations

import math
import random

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from sidecar.breaker import BreakerSettings, BreakerView, CircuitBreaker, Mode, Permit, State
from tests.unit.breaker._support import FakeClock, Recorder

BASE_MS, MULTIPLIER, MAX_MS, DECAY_MS = 1000.0, 2.0, 8000.0, 5000.0
HEALTH_TRIPS = frozenset(
    {"failure_rate", "slow_call_rate", "consecutive_failures", "probe_failed", "probe_slow"}
)
EPS = 1e-9


def expected_base_s(streak: int) -> float:
    """min(max_ms, base_ms x multiplier^(streak-1)), written out here, in seconds."""
    return min(MAX_MS, BASE_MS * MULTIPLIER ** (max(1, streak) - 1)) / 1000.0


class BreakerMachine(RuleBasedStateMachine):
    """Drives one breaker with calls, outcomes, releases, time and mode changes.

    Any illegal transition would raise IllegalTransitionError out of a rule and fail the run.
    """

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.recorder = Recorder()
        self.permits: list[Permit] = []
        self.breaker = CircuitBreaker("payments")
        self.jitter = 0.0
        self.streak = 0  # the streak as last observed; moves only as the rules below allow
        self.heard = 0  # transitions already checked

    @initialize(
        window_type=st.sampled_from(["count", "time"]),
        probes=st.integers(1, 3),
        consecutive=st.one_of(st.none(), st.integers(1, 4)),
        seed=st.integers(0, 1000),
        jitter=st.sampled_from([0.0, 0.25]),
    )
    def build(
        self, window_type: str, probes: int, consecutive: int | None, seed: int, jitter: float
    ) -> None:
        self.jitter = jitter
        breaker_settings = BreakerSettings(
            window_type="count" if window_type == "count" else "time",
            window_size=6,
            window_seconds=4.0,
            window_buckets=4,
            minimum_calls=4,
            consecutive_failures=consecutive,
            half_open_probes=probes,
            probe_timeout_ms=3000.0,
            open_base_ms=BASE_MS,
            open_multiplier=MULTIPLIER,
            open_max_ms=MAX_MS,
            open_jitter=jitter,
            streak_decay_ms=DECAY_MS,
        )
        self.breaker = CircuitBreaker(
            "payments", breaker_settings, clock=self.clock, wall_clock=self.clock.wall,
            rng=random.Random(seed),
        )
        self.breaker.add_listener(self.recorder)

    @rule()
    def acquire(self) -> None:
        permit = self.breaker.try_acquire()
        if permit is not None:
            self.permits.append(permit)

    @precondition(lambda self: bool(self.permits))
    @rule(data=st.data(), failed=st.booleans(), slow=st.booleans())
    def record(self, data: st.DataObject, failed: bool, slow: bool) -> None:
        permit = self.permits.pop(data.draw(st.integers(0, len(self.permits) - 1)))
        self.breaker.record(permit, 1.0 if slow else 0.001, failed)

    @precondition(lambda self: bool(self.permits))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        permit = self.permits.pop(data.draw(st.integers(0, len(self.permits) - 1)))
        self.breaker.release(permit)

    @rule(seconds=st.floats(0.0, 12.0))
    def wait(self, seconds: float) -> None:
        before = self.breaker.view()
        self.clock.advance(seconds)
        after = self.breaker.view()
        assert after.state is before.state  # time alone never changes the state
        if before.state is State.CLOSED and before.mode is not Mode.DISABLED:
            # Time CLOSED decays the streak: the first step when the countdown runs out, then
            # one per streak_decay_ms. Near a step boundary float rounding may go either way.
            low, high = (
                self._decayed(before, seconds + delta) for delta in (1e-6, -1e-6)
            )
            assert low <= after.trip_streak <= high
        else:  # OPEN, HALF_OPEN, disabled: the streak stands still, whatever the time
            assert after.trip_streak == before.trip_streak
        self.streak = after.trip_streak

    @precondition(lambda self: self.breaker.state is State.OPEN)
    @rule()
    def wait_out_the_open_period(self) -> None:
        """Callers that arrive just as the open period ends (so long streaks are reached)."""
        self.wait(self.breaker.retry_after_s())

    @staticmethod
    def _decayed(before: BreakerView, seconds: float) -> int:
        if before.trip_streak == 0 or seconds < before.streak_decay_in_s:
            return before.trip_streak
        steps = 1 + math.floor((seconds - before.streak_decay_in_s) / (DECAY_MS / 1000.0))
        return max(0, before.trip_streak - steps)

    @rule(mode=st.sampled_from(list(Mode)))
    def set_mode(self, mode: Mode) -> None:
        self.breaker.set_mode(mode)

    @invariant()
    def probes_in_flight_never_exceed_the_limit(self) -> None:
        view = self.breaker.view()
        assert view.half_open_in_flight <= self.breaker.settings.half_open_probes
        if view.state is not State.HALF_OPEN:
            assert view.half_open_in_flight == 0

    @invariant()
    def the_streak_grows_by_one_per_health_trip_and_otherwise_only_decays_in_time(self) -> None:
        # Only `wait` moves the clock (and it checks decay itself); every other rule happens at
        # one instant, so the streak changes only through the transitions it caused.
        streak = self.streak
        for transition in self.recorder.transitions[self.heard:]:
            if transition.to_state is State.OPEN and transition.reason in HEALTH_TRIPS:
                assert transition.trip_streak == streak + 1
            else:
                assert transition.trip_streak == streak  # forced_open, closing, half-opening
            streak = transition.trip_streak
        self.heard = len(self.recorder.transitions)
        assert self.breaker.view().trip_streak == streak
        self.streak = streak

    @invariant()
    def the_open_duration_follows_the_streak(self) -> None:
        view = self.breaker.view()
        last = view.last_transition
        if view.state is State.OPEN:
            assert last is not None and last.to_state is State.OPEN
            assert view.open_duration_s == last.open_duration_s
            if last.reason in HEALTH_TRIPS:
                # The scheduled period: min(max, base x multiplier^(streak-1)) +/- jitter.
                base = expected_base_s(view.trip_streak)
                low = base * (1 - self.jitter) - EPS
                high = min(MAX_MS / 1000.0, base * (1 + self.jitter)) + EPS
                assert low <= view.open_duration_s <= high
                if self.jitter == 0.0:
                    assert view.open_duration_s == base
                if view.mode is not Mode.FORCED_OPEN:
                    assert 0.0 <= self.breaker.retry_after_s() <= view.open_duration_s + EPS
            else:  # forced open: no scheduled period
                assert view.open_duration_s == 0.0
        else:  # the base of the next period, before jitter
            assert view.open_duration_s == expected_base_s(view.trip_streak + 1)

    @invariant()
    def the_decay_countdown_runs_only_while_closed_with_a_streak(self) -> None:
        view = self.breaker.view()
        decaying = (
            view.state is State.CLOSED and view.mode is not Mode.DISABLED and view.trip_streak > 0
        )
        if decaying:
            assert 0.0 < view.streak_decay_in_s <= DECAY_MS / 1000.0 + EPS
        else:
            assert view.streak_decay_in_s == 0.0

    @invariant()
    def listeners_heard_a_connected_chain_ending_in_the_current_state(self) -> None:
        expected_from = State.CLOSED
        for transition in self.recorder.transitions:
            assert transition.from_state is expected_from
            assert (transition.open_duration_s > 0) == (
                transition.to_state is State.OPEN and transition.reason != "forced_open"
            )
            expected_from = transition.to_state
        assert self.breaker.state is expected_from

    @invariant()
    def modes_mean_what_they_say(self) -> None:
        mode = self.breaker.mode
        if mode is Mode.FORCED_OPEN:
            assert self.breaker.state is State.OPEN
            assert self.breaker.try_acquire() is None
        if mode is Mode.DISABLED:
            assert self.breaker.state is State.CLOSED


BreakerMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None
)
test_breaker_invariants_hold_for_any_sequence_of_operations = BreakerMachine.TestCase
