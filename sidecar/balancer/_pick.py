"""The choice, apart from load estimation: one picker class per policy, each O(1) per pick.

Every picker chooses from the balancer's list of *active* (in the set, not ejected) endpoints,
which it never changes, and honours ``avoid``: it prefers endpoints not in it (a retry prefers
an endpoint not yet tried) and falls back to avoided ones only when every active endpoint is
avoided. With ``avoid`` empty a pick costs two random numbers and two cost reads. With
``avoid`` non-empty, a few random draws almost always find a candidate; when they do not, a
scan from a random start looks at no more than ``len(avoid) + 2`` slots, so a pick stays
O(len(avoid)), never O(endpoints).

Threading rules: none needed; the balancer that owns them runs on one event loop.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from random import Random
from typing import Any

from sidecar.balancer._endpoint import Endpoint
from sidecar.balancer._settings import BalancerSettings

_DRAWS = 3  # random draws before the bounded scan

AnyEndpoint = Endpoint[Any]


def _draw(
    active: Sequence[AnyEndpoint],
    avoid: Collection[AnyEndpoint],
    other: AnyEndpoint | None,
    rng: Random,
) -> AnyEndpoint | None:
    """A random active endpoint that is neither in ``avoid`` nor ``other``; None if none is."""
    n = len(active)
    for _ in range(_DRAWS):
        candidate = active[int(rng.random() * n)]
        if candidate is not other and candidate not in avoid:
            return candidate
    start = int(rng.random() * n)
    for step in range(min(n, len(avoid) + 2)):
        candidate = active[(start + step) % n]
        if candidate is not other and candidate not in avoid:
            return candidate
    return None


def _two(
    active: Sequence[AnyEndpoint], avoid: Collection[AnyEndpoint], rng: Random
) -> tuple[AnyEndpoint, AnyEndpoint | None]:
    """Two distinct random candidates (the second None when only one is eligible)."""
    n = len(active)
    if avoid:
        first = _draw(active, avoid, None, rng)
        if first is not None:
            return first, _draw(active, avoid, first, rng)
        # every active endpoint is avoided: choose among them all
    if n == 1:
        return active[0], None
    i = int(rng.random() * n)
    j = int(rng.random() * (n - 1))
    if j >= i:
        j += 1
    return active[i], active[j]


class P2cEwma:
    """Power of two choices over PeakEWMA (Linkerd): two distinct random active endpoints, the
    lower ``latency estimate x (in_flight + 1)`` wins (ties: the first drawn, itself random)."""

    __slots__ = ("_rng", "_tau_s")

    def __init__(self, rng: Random, ewma_decay_ms: float) -> None:
        self._rng = rng
        self._tau_s = ewma_decay_ms / 1000.0

    def pick(
        self, active: Sequence[AnyEndpoint], avoid: Collection[AnyEndpoint], now: float
    ) -> AnyEndpoint:
        first, second = _two(active, avoid, self._rng)
        if second is None:
            return first
        tau_s = self._tau_s
        cost_first = first.load.value(now, tau_s) * (first.in_flight + 1)
        cost_second = second.load.value(now, tau_s) * (second.in_flight + 1)
        return second if cost_second < cost_first else first


class LeastRequest:
    """Power of two choices on calls in flight only: Envoy's ``least_request`` with
    ``choice_count`` 2. Latency is not looked at."""

    __slots__ = ("_rng",)

    def __init__(self, rng: Random) -> None:
        self._rng = rng

    def pick(
        self, active: Sequence[AnyEndpoint], avoid: Collection[AnyEndpoint], now: float
    ) -> AnyEndpoint:
        first, second = _two(active, avoid, self._rng)
        if second is None or first.in_flight <= second.in_flight:
            return first
        return second


class RoundRobin:
    """Each pick takes the next active endpoint in turn (skipping avoided ones).

    The active list's order changes when endpoints are ejected or return (the balancer moves the
    last one into the gap), so the rotation is fair over time rather than a fixed sequence.
    """

    __slots__ = ("_next",)

    def __init__(self, start: int = 0) -> None:
        self._next = start

    def pick(
        self, active: Sequence[AnyEndpoint], avoid: Collection[AnyEndpoint], now: float
    ) -> AnyEndpoint:
        n = len(active)
        index = self._next % n
        if avoid:
            for step in range(min(n, len(avoid) + 1)):
                candidate = active[(index + step) % n]
                if candidate not in avoid:
                    self._next = (index + step + 1) % n
                    return candidate
        self._next = (index + 1) % n
        return active[index]


Picker = P2cEwma | LeastRequest | RoundRobin


def make_picker(settings: BalancerSettings, rng: Random) -> Picker:
    """The picker for ``settings.policy``."""
    if settings.policy == "round_robin":
        return RoundRobin()
    if settings.policy == "least_request":
        return LeastRequest(rng)
    return P2cEwma(rng, settings.ewma_decay_ms)
