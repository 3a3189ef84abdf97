"""Settings: defaults in one place, every bad value refused with its field named."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.breaker import BreakerSettings, Mode


def test_defaults_are_the_documented_ones() -> None:
    s = BreakerSettings()
    assert (s.window_type, s.window_size, s.window_seconds, s.window_buckets) == (
        "count", 20, 10.0, 10,
    )
    assert (s.minimum_calls, s.failure_rate, s.slow_call_ms, s.slow_call_rate) == (
        10, 0.5, 500.0, 0.8,
    )
    assert (s.consecutive_failures, s.half_open_probes, s.probe_timeout_ms) == (5, 3, 10000.0)
    assert (s.open_base_ms, s.open_multiplier, s.open_max_ms, s.open_jitter) == (
        1000.0, 2.0, 60000.0, 0.2,
    )
    assert (s.streak_decay_ms, s.mode) == (30000.0, Mode.ENFORCE)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("window_type", "sliding", "window_type: must be 'count' or 'time'"),
        ("window_size", 0, "window_size: must be an integer >= 1"),
        ("window_size", True, "window_size: must be an integer >= 1"),
        ("window_seconds", 0.0, "window_seconds: must be a finite number > 0"),
        ("window_seconds", float("inf"), "window_seconds: must be a finite number > 0"),
        ("window_buckets", 2.5, "window_buckets: must be an integer >= 1"),
        ("minimum_calls", -1, "minimum_calls: must be an integer >= 1"),
        ("failure_rate", 0.0, "failure_rate: must be > 0 and <= 1"),
        ("failure_rate", 1.5, "failure_rate: must be > 0 and <= 1"),
        ("failure_rate", float("nan"), "failure_rate: must be > 0 and <= 1"),
        ("slow_call_ms", -5, "slow_call_ms: must be a finite number > 0"),
        ("slow_call_rate", 2, "slow_call_rate: must be > 0 and <= 1"),
        ("consecutive_failures", 0, "consecutive_failures: must be an integer >= 1"),
        ("half_open_probes", 0, "half_open_probes: must be an integer >= 1"),
        ("probe_timeout_ms", 0, "probe_timeout_ms: must be a finite number > 0"),
        ("open_base_ms", 0, "open_base_ms: must be a finite number > 0"),
        ("open_multiplier", 0.5, "open_multiplier: must be a finite number >= 1"),
        ("open_max_ms", 10.0, "open_max_ms: must be >= open_base_ms (1000)"),
        ("open_jitter", 1.0, "open_jitter: must be >= 0 and < 1"),
        ("open_jitter", -0.1, "open_jitter: must be >= 0 and < 1"),
        ("streak_decay_ms", 0, "streak_decay_ms: must be a finite number > 0"),
        ("streak_decay_ms", -1.0, "streak_decay_ms: must be a finite number > 0"),
        ("streak_decay_ms", float("inf"), "streak_decay_ms: must be a finite number > 0"),
        ("streak_decay_ms", float("nan"), "streak_decay_ms: must be a finite number > 0"),
        ("streak_decay_ms", True, "streak_decay_ms: must be a finite number > 0"),
        ("mode", "sometimes", "mode: must be one of enforce, metrics_only, disabled, forced_open"),
    ],
)
def test_a_bad_value_is_refused_naming_the_field(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        BreakerSettings(**{field: value})


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ValueError) as excinfo:
        BreakerSettings(failure_rate=0, half_open_probes=0)
    assert "failure_rate:" in str(excinfo.value) and "half_open_probes:" in str(excinfo.value)


def test_mode_may_be_given_as_its_string_value() -> None:
    assert BreakerSettings(mode="metrics_only").mode is Mode.METRICS_ONLY  # type: ignore[arg-type]


def test_consecutive_failures_may_be_turned_off() -> None:
    assert BreakerSettings(consecutive_failures=None).consecutive_failures is None


def test_window_shape_compares_only_what_the_window_is_built_from() -> None:
    count = BreakerSettings(window_size=20)
    assert count.same_window_shape(BreakerSettings(window_size=20, failure_rate=0.9))
    assert not count.same_window_shape(BreakerSettings(window_size=30))
    assert not count.same_window_shape(BreakerSettings(window_type="time"))
    time_window = BreakerSettings(window_type="time", window_size=5)
    assert time_window.same_window_shape(BreakerSettings(window_type="time", window_size=99))
    assert not time_window.same_window_shape(BreakerSettings(window_type="time", window_buckets=5))
