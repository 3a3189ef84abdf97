"""``adaptive_concurrency`` keys: defaults from sidecar.resilience.limits, settings for the
limiter, and errors that name the key."""

from __future__ import annotations

import pytest

from sidecar.config import AdaptiveConcurrencyConfig, ConfigError, UpstreamConfig, parse_config
from sidecar.resilience.limits import LimitSettings

BASE = """
service: checkout
upstreams:
  orders:
    address: 127.0.0.1:50051
    routes: ["/orders.v1.Orders/"]
"""


def _upstream(extra: str) -> UpstreamConfig:
    return parse_config(BASE + extra).upstreams["orders"]


def test_no_adaptive_limit_by_default() -> None:
    assert _upstream("").adaptive_concurrency is None


def test_an_empty_mapping_takes_every_default_from_the_limit_settings() -> None:
    adaptive = _upstream("    adaptive_concurrency: {}\n").adaptive_concurrency
    assert adaptive is not None
    assert adaptive.to_settings() == LimitSettings()
    assert (adaptive.algorithm, adaptive.initial_limit, adaptive.min_limit, adaptive.smoothing,
            adaptive.tolerance, adaptive.long_window, adaptive.quiet_ms) == (
        "gradient2", 20, 4, 0.2, 1.5, 600, 1000.0)


def test_keys_become_limit_settings() -> None:
    adaptive = _upstream(
        "    max_concurrent_requests: 64\n"
        "    adaptive_concurrency: {algorithm: vegas, initial_limit: 30, min_limit: 2,\n"
        "                           smoothing: 0.5, tolerance: 2.0, long_window: 100,"
        " quiet_ms: 250}\n"
    ).adaptive_concurrency
    assert adaptive is not None
    assert adaptive.to_settings() == LimitSettings(
        algorithm="vegas", initial_limit=30, min_limit=2, smoothing=0.5, tolerance=2.0,
        long_window=100, quiet_ms=250.0)


def test_the_config_defaults_are_the_limit_settings_defaults() -> None:
    # One place for every default: the model reads LimitSettings, never repeats a number.
    defaults = LimitSettings()
    for name, field in AdaptiveConcurrencyConfig.model_fields.items():
        assert field.default == getattr(defaults, name), name


@pytest.mark.parametrize(("extra", "key", "problem"), [
    ("adaptive_concurrency: {algorithm: aimd}", "upstreams.orders.adaptive_concurrency.algorithm",
     "'gradient2' or 'vegas'"),
    ("adaptive_concurrency: {min_limit: 30}", "upstreams.orders.adaptive_concurrency",
     "min_limit (30) must not exceed initial_limit (20)"),
    ("adaptive_concurrency: {initial_limit: 0}",
     "upstreams.orders.adaptive_concurrency.initial_limit", "greater than or equal to 1"),
    ("adaptive_concurrency: {smoothing: 0}", "upstreams.orders.adaptive_concurrency.smoothing",
     "greater than 0"),
    ("adaptive_concurrency: {tolerance: 0.9}", "upstreams.orders.adaptive_concurrency.tolerance",
     "greater than or equal to 1"),
    ("adaptive_concurrency: {long_window: 5}",
     "upstreams.orders.adaptive_concurrency.long_window", "greater than or equal to 10"),
    ("adaptive_concurrency: {quiet_ms: -1}", "upstreams.orders.adaptive_concurrency.quiet_ms",
     "must be > 0"),
    ("adaptive_concurrency: {initial_limit: 20, typo: 1}",
     "upstreams.orders.adaptive_concurrency.typo", "unknown key"),
    ("max_concurrent_requests: 10\n    adaptive_concurrency: {initial_limit: 20}",
     "upstreams.orders", "adaptive_concurrency.initial_limit (20) must not exceed "
     "max_concurrent_requests (10)"),
])
def test_bad_keys_are_refused_naming_the_key(extra: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _upstream("    " + extra + "\n")
    text = "\n".join(caught.value.problems)
    assert key in text, text
    assert problem in text, text
