"""The breaker's states and modes as the ``sidecar.v1`` proto enums: one map for everything that
writes or reads them (the event recorder, the admin API, the event log's answers, the CLIs).

A state's proto name is ``BREAKER_STATE_`` + its upper-case name (``HALF_OPEN``); the breaker's
own value is the lower-case metric label (``half_open``).
"""

from __future__ import annotations

from typing import Final

from sidecar.breaker import Mode, State, WindowSnapshot
from sidecar.v1 import events_pb2

__all__ = [
    "MODE_NAMES", "MODE_TO_PROTO", "PROTO_TO_MODE", "STATE_BY_NAME", "STATE_NAMES",
    "STATE_TO_PROTO", "state_name", "window_to_proto",
]

STATE_TO_PROTO: Final[dict[State, events_pb2.BreakerState]] = {
    State.CLOSED: events_pb2.BREAKER_STATE_CLOSED,
    State.OPEN: events_pb2.BREAKER_STATE_OPEN,
    State.HALF_OPEN: events_pb2.BREAKER_STATE_HALF_OPEN,
}
STATE_BY_NAME: Final[dict[str, events_pb2.BreakerState]] = {
    state.name: value for state, value in STATE_TO_PROTO.items()
}
"""``"HALF_OPEN"`` → ``BREAKER_STATE_HALF_OPEN`` (the projections keep states by name)."""
MODE_TO_PROTO: Final[dict[Mode, events_pb2.BreakerMode]] = {
    Mode.ENFORCE: events_pb2.BREAKER_MODE_ENFORCE,
    Mode.METRICS_ONLY: events_pb2.BREAKER_MODE_METRICS_ONLY,
    Mode.DISABLED: events_pb2.BREAKER_MODE_DISABLED,
    Mode.FORCED_OPEN: events_pb2.BREAKER_MODE_FORCED_OPEN,
}
PROTO_TO_MODE: Final[dict[events_pb2.BreakerMode, Mode]] = {
    value: mode for mode, value in MODE_TO_PROTO.items()
}


STATE_NAMES: Final[dict[int, str]] = {
    value: name.removeprefix("BREAKER_STATE_") for name, value in events_pb2.BreakerState.items()
}
"""``BREAKER_STATE_HALF_OPEN`` → ``HALF_OPEN`` for every value the proto defines: the one map
from the wire enum to a name (the event log's readers add ``UNKNOWN(n)`` for the others,
:func:`sidecar.eventlog.enums.breaker_state_label`). A plain dict: a rebuild asks it per event."""
MODE_NAMES: Final[dict[int, str]] = {
    value: name.removeprefix("BREAKER_MODE_") for name, value in events_pb2.BreakerMode.items()
}
"""``BREAKER_MODE_METRICS_ONLY`` → ``METRICS_ONLY``, likewise."""


def state_name(value: int) -> str:
    """``BREAKER_STATE_HALF_OPEN`` → ``HALF_OPEN`` (raises ``ValueError`` for an undefined
    value: callers that may meet one use :func:`sidecar.eventlog.enums.breaker_state_label`)."""
    try:
        return STATE_NAMES[value]
    except KeyError:
        raise ValueError(f"BreakerState has no value {value}") from None


def window_to_proto(snapshot: WindowSnapshot) -> events_pb2.WindowSnapshot:
    """The breaker's window as the events and the admin API carry it."""
    return events_pb2.WindowSnapshot(
        calls=snapshot.calls,
        failures=snapshot.failures,
        slow_calls=snapshot.slow_calls,
        failure_rate=snapshot.failure_rate,
        slow_call_rate=snapshot.slow_call_rate,
        consecutive_failures=snapshot.consecutive_failures,
    )
