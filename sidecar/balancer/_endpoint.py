"""One endpoint inside a :class:`Balancer`: address, the caller's target, load and outlier state."""

from __future__ import annotations

import math
from typing import Any, Generic, TypeVar

from sidecar.balancer._load import PeakEwma
from sidecar.balancer._outlier import OutlierState

T = TypeVar("T")


class Endpoint(Generic[T]):
    """One endpoint inside a :class:`Balancer`.

    ``address`` is its ``HOST:PORT``; ``target`` is the caller's object for it (the proxy puts
    its connection there; the balancer never looks at it, and the caller may replace it);
    ``in_flight`` counts calls started and not yet finished or cancelled. The rest is the
    balancer's: its latency estimate (:class:`PeakEwma`), its outlier counts
    (:class:`OutlierState`) and where it sits in the active list.

    Endpoints are compared by identity: an address removed and added again is a new endpoint,
    and the old object's late ``finish()``/``cancel()`` only settle its own ``in_flight``.
    """

    __slots__ = (
        "_in_set",
        "_slot",
        "address",
        "calls",
        "failures",
        "in_flight",
        "load",
        "outlier",
        "target",
    )

    def __init__(self, address: str, target: T, initial_rtt_ms: float, now: float) -> None:
        self.address = address
        self.target = target
        self.in_flight = 0
        self.calls = 0  # finished calls since it joined the set
        self.failures = 0
        self.load = PeakEwma(initial_rtt_ms, now)
        self.outlier = OutlierState(now)
        self._slot = -1  # index in the balancer's active list; -1 when ejected or removed
        self._in_set = True

    @property
    def ejected(self) -> bool:
        """Out of service until its ejection time is up (the balancer notices lazily)."""
        return self.outlier.ejected_until is not None

    @property
    def in_set(self) -> bool:
        """False once ``update_endpoints()`` removed it."""
        return self._in_set

    def __repr__(self) -> str:
        state = "ejected" if self.ejected else ("active" if self._in_set else "removed")
        return f"Endpoint({self.address!r}, {state}, in_flight={self.in_flight})"


def by_address(endpoint: Endpoint[Any]) -> str:
    """Sort key: the address."""
    return endpoint.address


def return_time(endpoint: Endpoint[Any]) -> float:
    """When an ejected endpoint is due back (infinity when it is in service)."""
    until = endpoint.outlier.ejected_until
    return math.inf if until is None else until


def by_return(endpoint: Endpoint[Any]) -> tuple[float, str]:
    """Sort key: due back soonest first, then the address (deterministic)."""
    return return_time(endpoint), endpoint.address
