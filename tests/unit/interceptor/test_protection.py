"""Library mode's Protection follows config reloads like the proxy: state kept, leavers gone."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
import yaml

from sidecar.breaker import State
from sidecar.config import parse_config
from sidecar.interceptor import Protection
from sidecar.protection import NOOP_SCOPE, Rejection, admit


def _config(failure_rate: float = 0.5, **more: Any) -> Any:
    upstreams = {"pay": {"address": "127.0.0.1:1", "routes": ["/pay."],
                         "breaker": {"window": {"size": 2}, "minimum_calls": 2,
                                     "failure_rate": failure_rate,
                                     "consecutive_failures": None}},
                 **more}
    return parse_config(yaml.safe_dump({"service": "app", "upstreams": upstreams}))


def _fail_twice(protection: Protection) -> None:
    target = protection._target("/pay.S/M", None)
    assert target is not None
    for _ in range(2):
        decision = admit(target, "/pay.S/M", NOOP_SCOPE, lambda name: None)
        assert not isinstance(decision, Rejection)
        decision[1].settle(grpc.StatusCode.UNAVAILABLE, 0.01)


def test_reload_keeps_breaker_state_and_applies_new_settings() -> None:
    protection = Protection(_config())
    _fail_twice(protection)
    breaker = protection.breakers.get("pay")
    assert breaker is not None and breaker.state is State.OPEN

    protection.reload(_config(failure_rate=0.9, ship={"address": "127.0.0.1:2",
                                                      "routes": ["/ship."]}))

    assert protection.breakers.get("pay") is breaker
    assert breaker.state is State.OPEN
    assert breaker.settings.failure_rate == 0.9
    assert protection.breakers.names() == ["pay", "ship"]


def test_reload_drops_upstreams_that_left() -> None:
    protection = Protection(_config(ship={"address": "127.0.0.1:2", "routes": ["/ship."]}))
    protection.reload(_config())
    assert protection.breakers.names() == ["pay"]
    assert protection._target("/ship.S/M", None) is None


def test_pinned_upstream_guards_every_method_of_its_channel() -> None:
    protection = Protection(_config())
    target = protection._target("/anything.S/M", "pay")
    assert target is not None and target.guard.name == "pay"
    with pytest.raises(ValueError, match="no upstream named 'nope'"):
        protection.sync_interceptors(upstream="nope")
