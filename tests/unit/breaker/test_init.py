"""The package's public surface stays what other code is written against
(docs/breaker.md, "Using the breaker from code")."""

from __future__ import annotations

import inspect

import sidecar.breaker as breaker_pkg
from sidecar.breaker import CircuitBreaker
from tests.support.purity import assert_stdlib_only

AGREED = {
    "State", "Mode", "BreakerSettings", "WindowSnapshot", "Transition", "ModeChange",
    "BreakerListener", "CircuitBreaker", "Permit", "BreakerView",
}
ADDED = {"CountWindow", "TimeWindow", "SlidingWindow", "IllegalTransitionError"}


def test_all_exports_exactly_the_agreed_names_plus_documented_additions() -> None:
    assert set(breaker_pkg.__all__) == AGREED | ADDED
    for name in breaker_pkg.__all__:
        assert getattr(breaker_pkg, name) is not None


def test_circuit_breaker_methods_keep_their_agreed_signatures() -> None:
    params = {
        name: list(inspect.signature(getattr(CircuitBreaker, name)).parameters)
        for name in ("try_acquire", "record", "release", "retry_after_s", "set_mode",
                     "update_settings", "add_listener", "view")
    }
    assert params["record"] == ["self", "permit", "duration_s", "failed"]
    assert params["set_mode"] == ["self", "mode", "source"]
    assert list(inspect.signature(CircuitBreaker).parameters) == [
        "name", "settings", "clock", "wall_clock", "rng",
    ]


def test_the_breaker_package_imports_only_the_standard_library_and_itself() -> None:
    assert_stdlib_only(breaker_pkg)
