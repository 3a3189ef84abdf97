"""The trip streak: how many trips in a row, and its decay with time spent CLOSED.

The streak sets the next open duration (``open_base_ms * open_multiplier ** (streak - 1)``),
so a flapping upstream is left alone longer. It falls by one per ``streak_decay_ms`` spent
CLOSED (and not ``disabled``) without a trip, measured on the breaker's clock and never in
calls: at hundreds of calls a second a count window passes in milliseconds, and a flapping
upstream would never be backed off (docs/breaker.md, "Adaptive open duration").

Decay is lazy: nothing happens per call; the time spent is turned into steps only when the
streak is read or changed. Not thread-safe on its own: the breaker touches it under its lock.
"""

from __future__ import annotations


class TripStreak:
    """The streak and the instant its decay is counted from.

    ``decay_from`` is when CLOSED was entered, decay resumed (leaving ``disabled``), or the
    last decay step was taken. Every method takes ``decaying``: whether time counts towards
    decay now (CLOSED and not ``disabled``), which only the breaker knows.
    """

    __slots__ = ("decay_from", "decay_s", "value")

    def __init__(self, now: float, decay_s: float) -> None:
        self.value = 0
        self.decay_from = now
        self.decay_s = decay_s

    def _pending(self, now: float, decaying: bool) -> int:
        """Whole ``decay_s`` periods spent decaying since ``decay_from``. O(1)."""
        if not decaying or self.value <= 0:
            return 0
        return max(0, int((now - self.decay_from) // self.decay_s))

    def view(self, now: float, decaying: bool) -> tuple[int, float]:
        """The streak with decay earned by ``now`` and the seconds until it next falls by one
        (0.0 when it cannot: streak 0, or not decaying). Reads only, commits nothing."""
        steps = self._pending(now, decaying)
        streak = max(0, self.value - steps)
        if streak == 0 or not decaying:
            return streak, 0.0
        next_step = self.decay_from + (steps + 1) * self.decay_s
        return streak, max(0.0, next_step - now)

    def commit(self, now: float, decaying: bool) -> None:
        """Turn time spent decaying into steps, keeping the part of a period already spent
        (so reads never lose time). Called before anything that changes the decay rule."""
        steps = self._pending(now, decaying)
        if steps <= 0:
            return
        if steps >= self.value:
            self.value = 0
            self.decay_from = now
        else:
            self.value -= steps
            self.decay_from += steps * self.decay_s

    def grow(self, now: float, decaying: bool) -> int:
        """A trip: keep the decay earned until now, restart the decay clock, add one."""
        self.commit(now, decaying)
        self.decay_from = now
        self.value += 1
        return self.value

    def restart(self, now: float) -> None:
        """Count decay from ``now`` (entering CLOSED; leaving ``disabled``, time that does
        not count)."""
        self.decay_from = now
