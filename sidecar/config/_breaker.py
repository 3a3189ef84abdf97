"""The breaker's config keys (``upstreams.NAME.breaker``); defaults come from
:class:`sidecar.breaker.BreakerSettings` alone."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from sidecar.breaker import BreakerSettings, Mode
from sidecar.config._fields import (
    DEFAULT_FAILURE_CODES,
    PositiveFloat,
    PositiveInt,
    Rate,
    StatusCodeName,
    _Model,
)

_BREAKER = BreakerSettings()  # the single source of breaker defaults

STREAK_DECAY_WINDOWS_REPLACED = (
    "replaced by streak_decay_ms (the trip streak now decays with time spent CLOSED, "
    "not with call counts)"
)


class CountWindow(_Model):
    """Judge the last ``size`` calls."""

    type: Literal["count"] = "count"
    size: PositiveInt = _BREAKER.window_size


class TimeWindow(_Model):
    """Judge the calls of the last ``seconds``, kept in ``buckets`` buckets."""

    type: Literal["time"]
    seconds: PositiveFloat = _BREAKER.window_seconds
    buckets: PositiveInt = _BREAKER.window_buckets


class OpenDuration(_Model):
    """Adaptive open duration: ``base_ms * multiplier**(streak-1)``, capped, with jitter."""

    base_ms: PositiveFloat = _BREAKER.open_base_ms
    multiplier: Annotated[float, Field(ge=1.0)] = _BREAKER.open_multiplier
    max_ms: PositiveFloat = _BREAKER.open_max_ms
    jitter: Annotated[float, Field(ge=0.0, lt=1.0)] = _BREAKER.open_jitter

    @model_validator(mode="after")
    def _max_not_below_base(self) -> OpenDuration:
        if self.max_ms < self.base_ms:
            raise ValueError(f"max_ms ({self.max_ms:g}) must be >= base_ms ({self.base_ms:g})")
        return self


class BreakerConfig(_Model):
    """One upstream's breaker; converts to the breaker's own :class:`BreakerSettings`."""

    window: Annotated[CountWindow | TimeWindow, Field(discriminator="type")] = CountWindow()
    minimum_calls: PositiveInt = _BREAKER.minimum_calls
    failure_rate: Rate = _BREAKER.failure_rate
    slow_call_ms: PositiveFloat = _BREAKER.slow_call_ms
    slow_call_rate: Rate = _BREAKER.slow_call_rate
    consecutive_failures: PositiveInt | None = _BREAKER.consecutive_failures
    failure_codes: tuple[StatusCodeName, ...] = DEFAULT_FAILURE_CODES
    half_open_probes: PositiveInt = _BREAKER.half_open_probes
    probe_timeout_ms: PositiveFloat = _BREAKER.probe_timeout_ms
    streak_decay_ms: PositiveFloat = _BREAKER.streak_decay_ms
    open: OpenDuration = OpenDuration()
    mode: Mode = _BREAKER.mode
    # A removed key, kept only to refuse it with a message naming its replacement (an unknown
    # key would only say "check the spelling"). Never set on a valid config; not dumped, not
    # in the schema.
    streak_decay_windows: SkipJsonSchema[None] = Field(default=None, exclude=True, repr=False)

    @field_validator("streak_decay_windows", mode="plain")
    @classmethod
    def _streak_decay_windows_was_replaced(cls, value: Any) -> None:
        raise ValueError(STREAK_DECAY_WINDOWS_REPLACED)

    @model_validator(mode="before")
    @classmethod
    def _window_type_defaults_to_count(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("window"), dict):
            data["window"].setdefault("type", "count")
        return data

    @model_validator(mode="after")
    def _count_window_can_hold_the_thresholds(self) -> BreakerConfig:
        # A count window never holds more than `size` calls: a larger threshold could never
        # be reached, so say so instead of letting the breaker quietly clamp it.
        if isinstance(self.window, CountWindow):
            size = self.window.size
            if self.minimum_calls > size:
                raise ValueError(
                    f"minimum_calls ({self.minimum_calls}) must be <= window.size ({size})"
                )
            if self.consecutive_failures is not None and self.consecutive_failures > size:
                raise ValueError(
                    f"consecutive_failures ({self.consecutive_failures}) must be <= "
                    f"window.size ({size})"
                )
        return self

    def to_settings(self) -> BreakerSettings:
        """The breaker's settings (validated again by BreakerSettings itself)."""
        window = self.window
        return BreakerSettings(
            window_type=window.type,
            window_size=window.size if isinstance(window, CountWindow) else _BREAKER.window_size,
            window_seconds=(
                window.seconds if isinstance(window, TimeWindow) else _BREAKER.window_seconds
            ),
            window_buckets=(
                window.buckets if isinstance(window, TimeWindow) else _BREAKER.window_buckets
            ),
            minimum_calls=self.minimum_calls,
            failure_rate=self.failure_rate,
            slow_call_ms=self.slow_call_ms,
            slow_call_rate=self.slow_call_rate,
            consecutive_failures=self.consecutive_failures,
            half_open_probes=self.half_open_probes,
            probe_timeout_ms=self.probe_timeout_ms,
            open_base_ms=self.open.base_ms,
            open_multiplier=self.open.multiplier,
            open_max_ms=self.open.max_ms,
            open_jitter=self.open.jitter,
            streak_decay_ms=self.streak_decay_ms,
            mode=self.mode,
        )
