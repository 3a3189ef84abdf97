"""An upstream's adaptive concurrency limit (``upstreams.NAME.adaptive_concurrency``).

Defaults live in :class:`sidecar.resilience.limits.LimitSettings`; this model only names and
checks the keys. ``max_concurrent_requests`` stays the ceiling the limit never passes.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from sidecar.config._fields import PositiveFloat, PositiveInt, _Model
from sidecar.resilience.limits import Algorithm, LimitSettings

__all__ = ["AdaptiveConcurrencyConfig", "check_under_ceiling"]

_LIMITS = LimitSettings()  # the single source of adaptive-limit defaults


class AdaptiveConcurrencyConfig(_Model):
    """``adaptive_concurrency``: the limit follows latency (Gradient2, or Vegas); calls over it
    get RESOURCE_EXHAUSTED with ``x-sidecar-overflow: true`` at once. See
    :mod:`sidecar.resilience.limits` for how each algorithm moves the limit."""

    algorithm: Algorithm = _LIMITS.algorithm
    initial_limit: PositiveInt = _LIMITS.initial_limit
    min_limit: PositiveInt = _LIMITS.min_limit
    smoothing: Annotated[float, Field(gt=0.0, le=1.0)] = _LIMITS.smoothing
    tolerance: Annotated[float, Field(ge=1.0, le=100.0)] = _LIMITS.tolerance
    long_window: Annotated[int, Field(ge=10)] = _LIMITS.long_window
    quiet_ms: PositiveFloat = _LIMITS.quiet_ms
    window_ms: Annotated[float, Field(ge=0.0, le=60_000.0)] = _LIMITS.window_ms
    window_samples: PositiveInt = _LIMITS.window_samples

    @model_validator(mode="after")
    def _min_not_above_initial(self) -> AdaptiveConcurrencyConfig:
        if self.min_limit > self.initial_limit:
            raise ValueError(f"min_limit ({self.min_limit}) must not exceed initial_limit "
                             f"({self.initial_limit})")
        return self

    def to_settings(self) -> LimitSettings:
        return LimitSettings(
            algorithm=self.algorithm, initial_limit=self.initial_limit,
            min_limit=self.min_limit, smoothing=self.smoothing, tolerance=self.tolerance,
            long_window=self.long_window, quiet_ms=self.quiet_ms, window_ms=self.window_ms,
            window_samples=self.window_samples,
        )


def check_under_ceiling(adaptive: AdaptiveConcurrencyConfig | None,
                        max_concurrent_requests: int) -> None:
    """The adaptive limit must start under the upstream's ceiling (naming both keys)."""
    if adaptive is not None and adaptive.initial_limit > max_concurrent_requests:
        raise ValueError(
            f"adaptive_concurrency.initial_limit ({adaptive.initial_limit}) must not exceed "
            f"max_concurrent_requests ({max_concurrent_requests}), the ceiling of the limit"
        )
