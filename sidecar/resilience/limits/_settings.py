"""Adaptive concurrency limit settings: every default in one place, validated once.

``sidecar.config`` (``upstreams.NAME.adaptive_concurrency``) reads its defaults from here, so
changing a default means changing one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

Algorithm = Literal["gradient2", "vegas"]
ALGORITHMS: Final[tuple[Algorithm, ...]] = ("gradient2", "vegas")


def _int_at_least(problems: list[str], name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        problems.append(f"{name}: must be an integer >= {low}, got {value!r}")


def _number_in(problems: list[str], name: str, value: object, low: float, high: float,
               low_open: bool = False) -> None:
    ok = (not isinstance(value, bool) and isinstance(value, int | float)
          and math.isfinite(value) and (low < value if low_open else low <= value)
          and value <= high)
    if not ok:
        bracket = "(" if low_open else "["
        problems.append(f"{name}: must be a number in {bracket}{low:g}, {high:g}], "
                        f"got {value!r}")


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """How one upstream's adaptive concurrency limit moves (Netflix concurrency-limits'
    knobs). The upper bound is not here: it is the upstream's ``max_concurrent_requests``,
    handed to the limiter as its ``ceiling``.

    A bad value raises ``ValueError`` naming the field, e.g.
    ``min_limit: must not exceed initial_limit (20), got 30``.

    Example::

        settings = LimitSettings(initial_limit=50, tolerance=2.0)
    """

    algorithm: Algorithm = "gradient2"
    initial_limit: int = 20
    """The limit before any call has been measured."""
    min_limit: int = 4
    """The limit never falls below this (some calls always get through to be measured)."""
    smoothing: float = 0.2
    """Weight of each new estimate in the limit (1: follow every estimate at once)."""
    tolerance: float = 1.5
    """Gradient2: how much slower than the long-window RTT calls may get before the limit
    falls (1.5: 50 % slower is still fine)."""
    long_window: int = 600
    """Gradient2: samples in the long-window RTT average (an EWMA over this many calls)."""
    quiet_ms: float = 1000.0
    """A shedding period ends once no call was shed for this long (hysteresis)."""
    window_ms: float = 100.0
    """The limit moves at most once per this long, on the mean RTT of the calls in between."""
    window_samples: int = 10
    """... and only once that many calls were measured since it last moved."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.algorithm not in ALGORITHMS:
            problems.append(f"algorithm: must be one of {', '.join(ALGORITHMS)}, "
                            f"got {self.algorithm!r}")
        _int_at_least(problems, "initial_limit", self.initial_limit, 1)
        _int_at_least(problems, "min_limit", self.min_limit, 1)
        if not problems and self.min_limit > self.initial_limit:
            problems.append(f"min_limit: must not exceed initial_limit ({self.initial_limit}),"
                            f" got {self.min_limit}")
        _number_in(problems, "smoothing", self.smoothing, 0.0, 1.0, low_open=True)
        _number_in(problems, "tolerance", self.tolerance, 1.0, 100.0)
        _int_at_least(problems, "long_window", self.long_window, 10)
        _number_in(problems, "quiet_ms", self.quiet_ms, 0.0, 3_600_000.0, low_open=True)
        _number_in(problems, "window_ms", self.window_ms, 0.0, 60_000.0)
        _int_at_least(problems, "window_samples", self.window_samples, 1)
        if problems:
            raise ValueError("; ".join(problems))

    def check_ceiling(self, ceiling: int) -> None:
        """``ValueError`` unless ``initial_limit`` fits under ``ceiling``
        (``max_concurrent_requests``): a limit that starts above the ceiling could never be
        reached, which is a config mistake, not a wish."""
        if self.initial_limit > ceiling:
            raise ValueError(f"initial_limit ({self.initial_limit}) must not exceed "
                             f"max_concurrent_requests ({ceiling})")
