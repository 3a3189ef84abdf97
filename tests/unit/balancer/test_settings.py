"""Settings: the agreed defaults, and every bad value named in the error."""

from __future__ import annotations

import dataclasses
import math

import pytest

from sidecar.balancer import BalancerSettings, OutlierSettings


def test_balancer_defaults_are_p2c_ewma_with_a_ten_second_decay_and_linkerds_default_rtt() -> None:
    settings = BalancerSettings()
    assert settings.policy == "p2c_ewma"
    assert settings.ewma_decay_ms == 10_000.0
    assert settings.default_rtt_ms == 30.0


def test_outlier_defaults_are_the_agreed_ones() -> None:
    outlier = OutlierSettings()
    assert outlier.enabled is True
    assert outlier.consecutive_failures == 5
    assert outlier.failure_rate is None
    assert outlier.minimum_calls == 20
    assert outlier.base_ejection_ms == 30_000.0
    assert outlier.max_ejection_ms == 300_000.0
    assert outlier.interval_ms == 10_000.0
    assert outlier.max_ejection_percent == 50.0


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        BalancerSettings().policy = "round_robin"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        OutlierSettings().enabled = False  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"policy": "random"}, "policy: must be one of p2c_ewma, round_robin, least_request"),
        ({"ewma_decay_ms": 0}, "ewma_decay_ms: must be a finite number > 0, got 0"),
        ({"ewma_decay_ms": math.inf}, "ewma_decay_ms: must be a finite number > 0, got inf"),
        ({"default_rtt_ms": -1.0}, "default_rtt_ms: must be a finite number > 0, got -1.0"),
        ({"default_rtt_ms": True}, "default_rtt_ms: must be a finite number > 0, got True"),
    ],
)
def test_a_bad_balancer_value_raises_naming_the_field_and_the_rule(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        BalancerSettings(**overrides)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"enabled": "yes"}, "enabled: must be true or false"),
        ({"consecutive_failures": 0}, "consecutive_failures: must be an integer >= 1 or None"),
        ({"consecutive_failures": 2.5}, "consecutive_failures: must be an integer >= 1"),
        ({"failure_rate": 0.0}, "failure_rate: must be > 0 and <= 1 or None, got 0.0"),
        ({"failure_rate": 1.5}, "failure_rate: must be > 0 and <= 1 or None, got 1.5"),
        ({"minimum_calls": 0}, "minimum_calls: must be an integer >= 1, got 0"),
        ({"base_ejection_ms": 0}, "base_ejection_ms: must be a finite number > 0"),
        ({"max_ejection_ms": math.nan}, "max_ejection_ms: must be a finite number > 0"),
        (
            {"base_ejection_ms": 1000.0, "max_ejection_ms": 500.0},
            r"max_ejection_ms: must be >= base_ejection_ms \(1000\), got 500",
        ),
        ({"interval_ms": -5}, "interval_ms: must be a finite number > 0, got -5"),
        ({"max_ejection_percent": 101}, "max_ejection_percent: must be >= 0 and <= 100, got 101"),
        ({"max_ejection_percent": -1}, "max_ejection_percent: must be >= 0 and <= 100, got -1"),
    ],
)
def test_a_bad_outlier_value_raises_naming_the_field_and_the_rule(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        OutlierSettings(**overrides)  # type: ignore[arg-type]


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(ValueError, match=r"minimum_calls.*; interval_ms"):
        OutlierSettings(minimum_calls=0, interval_ms=0)


def test_rules_can_be_turned_off_and_the_limits_reach_their_bounds() -> None:
    outlier = OutlierSettings(
        consecutive_failures=None, failure_rate=1.0, max_ejection_percent=0,
        base_ejection_ms=5.0, max_ejection_ms=5.0,
    )
    assert outlier.consecutive_failures is None
    assert OutlierSettings(max_ejection_percent=100).max_ejection_percent == 100
