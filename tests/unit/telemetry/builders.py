"""Builders for breaker records and proxy call infos used by the telemetry unit tests."""

from __future__ import annotations

from sidecar.breaker import BreakerView, Mode, State, Transition, WindowSnapshot
from sidecar.proxy.hooks import CallInfo

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
