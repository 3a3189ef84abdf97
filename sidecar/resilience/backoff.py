"""Exponential backoff between retries, with jitter so retries of many callers spread out."""

from __future__ import annotations

import random as _random
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """The delay before the ``n``-th retry: ``min(base_s * multiplier**(n-1), max_s)``, scaled by
    a random factor in ``[1 - jitter, 1 + jitter]`` and never above ``max_s``.

    Proportional jitter (not gRFC A6's full ``random(0, cap)``) keeps the configured ``base_ms``
    meaningful as the typical first delay, and still breaks up synchronised retries.
    """

    def __init__(self, base_s: float, max_s: float, multiplier: float, jitter: float, *,
                 random: Callable[[], float] = _random.random) -> None:
        if base_s <= 0 or max_s < base_s:
            raise ValueError(f"need 0 < base_s <= max_s, got base_s={base_s!r} max_s={max_s!r}")
        if multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {multiplier!r}")
        if not 0 <= jitter <= 1:
            raise ValueError(f"jitter must be in [0, 1], got {jitter!r}")
        self.base_s = base_s
        self.max_s = max_s
        self.multiplier = multiplier
        self.jitter = jitter
        self._random = random

    def delay_s(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        if retry < 1:
            raise ValueError(f"retry counts from 1, got {retry!r}")
        # the exponent is capped before it can overflow a float: the delay is capped anyway
        capped = min(self.base_s * self.multiplier ** min(retry - 1, 64), self.max_s)
        factor = 1.0 + self.jitter * (2.0 * self._random() - 1.0)
        return min(capped * factor, self.max_s)
