"""Random operation sequences: the breaker's invariants hold whatever callers and operators do."""

from __future__ import annotations

import random

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from sidecar.breaker import BreakerSettings, CircuitBreaker, Mode, Permit, State
from tests.unit.breaker._support import FakeClock, Recorder


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

    @initialize(
        window_type=st.sampled_from(["count", "time"]),
        probes=st.integers(1, 3),
        consecutive=st.one_of(st.none(), st.integers(1, 4)),
        seed=st.integers(0, 1000),
    )
    def build(self, window_type: str, probes: int, consecutive: int | None, seed: int) -> None:
        breaker_settings = BreakerSettings(
            window_type="count" if window_type == "count" else "time",
            window_size=6,
            window_seconds=4.0,
            window_buckets=4,
            minimum_calls=4,
            consecutive_failures=consecutive,
            half_open_probes=probes,
            probe_timeout_ms=3000.0,
            open_base_ms=1000.0,
            open_max_ms=8000.0,
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
        self.clock.advance(seconds)

    @rule(mode=st.sampled_from(list(Mode)))
    def set_mode(self, mode: Mode) -> None:
        self.breaker.set_mode(mode)

    @invariant()
    def probes_in_flight_never_exceed_the_limit(self) -> None:
        view = self.breaker.view()
        assert view.half_open_in_flight <= self.breaker.settings.half_open_probes
        assert view.trip_streak >= 0

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
