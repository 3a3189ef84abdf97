"""Breaker settings: every default in one place, validated once at construction.

``sidecar.config`` reads its defaults from here, so changing a default means changing one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from sidecar.breaker._types import Mode

WindowType = Literal["count", "time"]


def _is_int_at_least(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_finite_above(value: object, low: float, *, inclusive: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return value >= low if inclusive else value > low


def _is_rate(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return 0 < value <= 1


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """How one breaker judges its upstream. Immutable; swap a whole new one in to reload.

    A bad value raises ``ValueError`` naming the field and the rule, e.g.
    ``failure_rate: must be > 0 and <= 1, got 1.5``.

    Two quiet clamps, because a count window can never hold more than ``window_size`` calls:
    with ``window_type="count"``, ``minimum_calls`` and ``consecutive_failures`` act as
    ``min(value, window_size)``.

    Example::

        settings = BreakerSettings(window_size=50, failure_rate=0.25, open_max_ms=30_000)
    """

    window_type: WindowType = "count"
    window_size: int = 20
    """Calls in a count window."""
    window_seconds: float = 10.0
    """Length of a time window."""
    window_buckets: int = 10
    """Buckets a time window is kept in (its time resolution is window_seconds / buckets)."""
    minimum_calls: int = 10
    """Rates are not judged before the window holds this many calls."""
    failure_rate: float = 0.5
    """Trip when failures / calls >= this (0 < x <= 1)."""
    slow_call_ms: float = 500.0
    """A call that took longer than this is slow."""
    slow_call_rate: float = 0.8
    """Trip when slow calls / calls >= this (0 < x <= 1)."""
    consecutive_failures: int | None = 5
    """Trip after this many failures in a row, even below minimum_calls. None: off."""
    half_open_probes: int = 3
    """Concurrent probes in HALF_OPEN; this many healthy probes close the breaker."""
    probe_timeout_ms: float = 10000.0
    """A probe that never reports back frees its slot after this."""
    open_base_ms: float = 1000.0
    """Open duration after the first trip of a streak."""
    open_multiplier: float = 2.0
    """Each further trip in a row multiplies the open duration by this (>= 1)."""
    open_max_ms: float = 60000.0
    """Cap of the open duration, jitter included."""
    open_jitter: float = 0.2
    """Open durations are spread by +/- this fraction (0 <= x < 1) so peers do not probe in step."""
    streak_decay_ms: float = 30000.0
    """Time spent CLOSED (and not disabled) without a trip that takes one off the trip streak.

    Measured on the breaker's clock, never in calls: at real traffic a count window passes in
    milliseconds, and a flapping upstream would never be backed off."""
    mode: Mode = Mode.ENFORCE

    def __post_init__(self) -> None:
        problems: list[str] = []

        def positive_int(name: str, value: object) -> None:
            if not _is_int_at_least(value, 1):
                problems.append(f"{name}: must be an integer >= 1, got {value!r}")

        def positive_number(name: str, value: object) -> None:
            if not _is_finite_above(value, 0.0, inclusive=False):
                problems.append(f"{name}: must be a finite number > 0, got {value!r}")

        def rate(name: str, value: object) -> None:
            if not _is_rate(value):
                problems.append(f"{name}: must be > 0 and <= 1, got {value!r}")

        if self.window_type not in ("count", "time"):
            problems.append(f"window_type: must be 'count' or 'time', got {self.window_type!r}")
        positive_int("window_size", self.window_size)
        positive_number("window_seconds", self.window_seconds)
        positive_int("window_buckets", self.window_buckets)
        positive_int("minimum_calls", self.minimum_calls)
        rate("failure_rate", self.failure_rate)
        positive_number("slow_call_ms", self.slow_call_ms)
        rate("slow_call_rate", self.slow_call_rate)
        if self.consecutive_failures is not None:
            positive_int("consecutive_failures", self.consecutive_failures)
        positive_int("half_open_probes", self.half_open_probes)
        positive_number("probe_timeout_ms", self.probe_timeout_ms)
        positive_number("open_base_ms", self.open_base_ms)
        if not _is_finite_above(self.open_multiplier, 1.0, inclusive=True):
            problems.append(
                f"open_multiplier: must be a finite number >= 1, got {self.open_multiplier!r}"
            )
        positive_number("open_max_ms", self.open_max_ms)
        if (
            _is_finite_above(self.open_max_ms, 0.0, inclusive=False)
            and _is_finite_above(self.open_base_ms, 0.0, inclusive=False)
            and self.open_max_ms < self.open_base_ms
        ):
            problems.append(
                f"open_max_ms: must be >= open_base_ms ({self.open_base_ms:g}), "
                f"got {self.open_max_ms:g}"
            )
        if not _is_finite_above(self.open_jitter, 0.0, inclusive=True) or self.open_jitter >= 1:
            problems.append(f"open_jitter: must be >= 0 and < 1, got {self.open_jitter!r}")
        positive_number("streak_decay_ms", self.streak_decay_ms)
        try:
            mode = Mode(self.mode)
        except ValueError:
            allowed = ", ".join(m.value for m in Mode)
            problems.append(f"mode: must be one of {allowed}, got {self.mode!r}")
        else:
            object.__setattr__(self, "mode", mode)  # accept "enforce" as well as Mode.ENFORCE
        if problems:
            raise ValueError("; ".join(problems))

    def same_window_shape(self, other: BreakerSettings) -> bool:
        """True when ``other`` would build the same window, so a reload can keep its counts."""
        if self.window_type != other.window_type:
            return False
        if self.window_type == "count":
            return self.window_size == other.window_size
        return (self.window_seconds, self.window_buckets) == (
            other.window_seconds,
            other.window_buckets,
        )
