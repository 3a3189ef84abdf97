"""Fakes for the breaker's unit tests: a clock you move by hand, a listener that remembers."""

from __future__ import annotations

import random
from typing import Any

from sidecar.breaker import (
    BreakerListener,
    BreakerSettings,
    CircuitBreaker,
    ModeChange,
    Transition,
)
from tests.support.fake_clock import WALL_OFFSET as WALL_OFFSET  # re-exported for the tests
from tests.support.fake_clock import FakeClock as FakeClock


class Recorder(BreakerListener):
    """Keeps every transition and mode change it hears."""

    def __init__(self) -> None:
        self.transitions: list[Transition] = []
        self.mode_changes: list[ModeChange] = []

    def on_transition(self, transition: Transition) -> None:
        self.transitions.append(transition)

    def on_mode_change(self, change: ModeChange) -> None:
        self.mode_changes.append(change)

    @property
    def reasons(self) -> list[str]:
        return [t.reason for t in self.transitions]

    @property
    def open_durations(self) -> list[float]:
        return [t.open_duration_s for t in self.transitions if t.open_duration_s > 0]


# Test defaults: no jitter, so open durations are exact; everything else as shipped.
TEST_DEFAULTS: dict[str, Any] = {"open_jitter": 0.0}


def make_breaker(
    clock: FakeClock | None = None, seed: int = 0, **overrides: Any
) -> tuple[CircuitBreaker, FakeClock, Recorder]:
    """A breaker on a fake clock with a recording listener attached."""
    clock = clock or FakeClock()
    settings = BreakerSettings(**{**TEST_DEFAULTS, **overrides})
    breaker = CircuitBreaker(
        "payments", settings, clock=clock, wall_clock=clock.wall, rng=random.Random(seed)
    )
    recorder = Recorder()
    breaker.add_listener(recorder)
    return breaker, clock, recorder


def call(breaker: CircuitBreaker, *, failed: bool = False, duration_s: float = 0.001) -> bool:
    """One call through the breaker; False when it was rejected."""
    permit = breaker.try_acquire()
    if permit is None:
        return False
    breaker.record(permit, duration_s, failed)
    return True


def calls(
    breaker: CircuitBreaker, n: int, *, failed: bool = False, duration_s: float = 0.001
) -> int:
    """``n`` calls; returns how many were admitted."""
    return sum(call(breaker, failed=failed, duration_s=duration_s) for _ in range(n))
