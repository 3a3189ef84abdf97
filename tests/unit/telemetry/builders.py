"""Builders for breaker and balancer records, balancers on a fake clock and proxy call infos
used by the telemetry unit tests."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from sidecar.balancer import (
    Balancer,
    BalancerSettings,
    Ejection,
    EndpointListener,
    EndpointsChange,
    OutlierSettings,
    Return,
)
from sidecar.breaker import BreakerView, Mode, State, Transition, WindowSnapshot
from sidecar.protection import CallInfo

TRIP_SNAPSHOT = WindowSnapshot(calls=10, failures=6, slow_calls=1, failure_rate=0.6,
                               slow_call_rate=0.1, consecutive_failures=3)


def transition(breaker: str = "payments", from_state: State = State.CLOSED,
               to_state: State = State.OPEN, reason: str = "failure_rate",
               open_duration_s: float = 1.5, trip_streak: int = 1,
               at_wall: float = 1_700_000_000.25) -> Transition:
    return Transition(
        breaker=breaker, from_state=from_state, to_state=to_state, reason=reason,
        snapshot=TRIP_SNAPSHOT, open_duration_s=open_duration_s, trip_streak=trip_streak,
        mode=Mode.ENFORCE, at_monotonic=100.0, at_wall=at_wall,
    )


def view(name: str = "payments", state: State = State.CLOSED,
         open_duration_s: float = 1.0) -> BreakerView:
    return BreakerView(
        name=name, state=state, mode=Mode.ENFORCE, snapshot=TRIP_SNAPSHOT,
        open_until_wall=None, trip_streak=0, last_transition=None, half_open_in_flight=0,
        open_duration_s=open_duration_s,
    )


def call_info(upstream: str = "payments", method: str = "/payments.v1.Payments/Charge",
              metadata: tuple[tuple[str, str | bytes], ...] = (),
              peer: str = "ipv4:127.0.0.1:40000") -> CallInfo:
    return CallInfo(
        upstream=upstream, method=method, breaker=upstream, kind="unary_unary", peer=peer,
        upstream_address="127.0.0.1:50051" if upstream else "", metadata=metadata,
    )


# --- balancer records and balancers on a fake clock ---------------------------------------------

WALL_OFFSET = 1_700_000_000.0  # the fake wall clock is the fake monotonic clock plus this
A, B, C = "10.0.0.1:50051", "10.0.0.2:50051", "10.0.0.3:50051"


class FakeClock:
    """Monotonic seconds that only move when a test says so; ``wall`` is unix seconds."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + WALL_OFFSET

    def advance(self, seconds: float) -> None:
        self.now += seconds


def ejection(upstream: str = "payments", endpoint: str = A,
             reason: str = "consecutive_failures", ejection_s: float = 30.0,
             ejections_in_a_row: int = 2, consecutive_failures: int = 5,
             failure_rate: float = 1.0, calls: int = 5,
             at_wall: float = 1_700_000_000.25) -> Ejection:
    return Ejection(upstream=upstream, endpoint=endpoint, reason=reason, ejection_s=ejection_s,
                    ejections_in_a_row=ejections_in_a_row,
                    consecutive_failures=consecutive_failures, failure_rate=failure_rate,
                    calls=calls, at_wall=at_wall)


def returned(upstream: str = "payments", endpoint: str = A, ejected_for_s: float = 30.0,
             at_wall: float = 1_700_000_030.25) -> Return:
    return Return(upstream=upstream, endpoint=endpoint, ejected_for_s=ejected_for_s,
                  at_wall=at_wall)


def change(upstream: str = "payments", added: tuple[str, ...] = (A, B, C),
           removed: tuple[str, ...] = (), count: int = 3, source: str = "endpoints",
           at_wall: float = 1_700_000_000.0) -> EndpointsChange:
    return EndpointsChange(upstream=upstream, added=added, removed=removed, count=count,
                           source=source, at_wall=at_wall)


def balancer(listeners: Sequence[EndpointListener], clock: FakeClock, *,
             upstream: str = "payments", addresses: Sequence[str] = (A, B, C),
             **outlier: Any) -> Balancer[str]:
    """A balancer over ``addresses`` on ``clock`` with ``listeners`` (already given its set)."""
    made: Balancer[str] = Balancer(upstream, BalancerSettings(), OutlierSettings(**outlier),
                                   clock=clock, wall_clock=clock.wall, rng=random.Random(0),
                                   listeners=listeners)
    made.update_endpoints({address: address for address in addresses}, "endpoints")
    return made


def fail(made: Balancer[str], address: str, n: int) -> None:
    """``n`` failed calls to the endpoint ``address``."""
    (endpoint,) = [e for e in made.endpoints() if e.address == address]
    for _ in range(n):
        made.finish(endpoint, made.start(endpoint), failed=True)
