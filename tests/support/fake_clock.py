"""A clock for unit tests of pure logic (breaker, balancer, limits): it moves only when told."""

from __future__ import annotations

WALL_OFFSET = 1_700_000_000.0  # the fake wall clock is the fake monotonic clock plus this


class FakeClock:
    """Monotonic seconds that only move when a test says so; :meth:`wall` is the matching
    wall-clock time."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + WALL_OFFSET

    def advance(self, seconds: float) -> None:
        self.now += seconds
