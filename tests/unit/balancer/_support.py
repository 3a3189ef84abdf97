"""Fakes for the balancer's unit tests: a clock moved by hand, a listener that remembers."""

from __future__ import annotations

import random
from typing import Any

from sidecar.balancer import (
    Balancer,
    BalancerSettings,
    Ejection,
    Endpoint,
    EndpointListener,
    EndpointsChange,
    OutlierSettings,
    Return,
)
from tests.support.fake_clock import WALL_OFFSET as WALL_OFFSET  # re-exported for the tests
from tests.support.fake_clock import FakeClock as FakeClock


class Recorder(EndpointListener):
    """Keeps every event it hears, in order."""

    def __init__(self) -> None:
        self.ejections: list[Ejection] = []
        self.returns: list[Return] = []
        self.changes: list[EndpointsChange] = []
        self.order: list[str] = []

    def on_ejected(self, ejection: Ejection) -> None:
        self.ejections.append(ejection)
        self.order.append(f"ejected {ejection.endpoint}")

    def on_returned(self, returned: Return) -> None:
        self.returns.append(returned)
        self.order.append(f"returned {returned.endpoint}")

    def on_endpoints_changed(self, change: EndpointsChange) -> None:
        self.changes.append(change)
        self.order.append("changed")


def addresses(n: int) -> dict[str, str]:
    """``n`` endpoint addresses, each its own target."""
    return {f"10.0.0.{i}:50051": f"conn-{i}" for i in range(1, n + 1)}


def make_balancer(
    n: int = 3,
    *,
    clock: FakeClock | None = None,
    seed: int = 0,
    settings: BalancerSettings | None = None,
    **outlier: Any,
) -> tuple[Balancer[str], FakeClock, Recorder]:
    """A balancer over ``n`` endpoints on a fake clock, with a recording listener attached."""
    clock = clock or FakeClock()
    recorder = Recorder()
    balancer: Balancer[str] = Balancer(
        "payments",
        settings or BalancerSettings(),
        OutlierSettings(**outlier),
        clock=clock,
        wall_clock=clock.wall,
        rng=random.Random(seed),
        listeners=[recorder],
    )
    if n:
        balancer.update_endpoints(addresses(n), "endpoints")
    return balancer, clock, recorder


def by_address(balancer: Balancer[str], address: str) -> Endpoint[str]:
    (endpoint,) = [e for e in balancer.endpoints() if e.address == address]
    return endpoint


def call(
    balancer: Balancer[str],
    endpoint: Endpoint[str],
    *,
    failed: bool = False,
    latency_s: float = 0.0,
    clock: FakeClock | None = None,
) -> None:
    """One call to ``endpoint`` that takes ``latency_s`` on ``clock`` and ends as told."""
    started = balancer.start(endpoint)
    if clock is not None and latency_s:
        clock.advance(latency_s)
    balancer.finish(endpoint, started, failed)


def fail(balancer: Balancer[str], endpoint: Endpoint[str], n: int) -> None:
    for _ in range(n):
        call(balancer, endpoint, failed=True)
