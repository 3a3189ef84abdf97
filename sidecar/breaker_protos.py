"""The breaker's states and modes as the ``sidecar.v1`` proto enums: one map for everything that
writes or reads them (the event recorder, the admin API, the event log's answers, the CLIs).

A state's proto name is ``BREAKER_STATE_`` + its upper-case name (``HALF_OPEN``); the breaker's
own value is the lower-case metric label (``half_open``).
"""

from __future__ import annotations

from typing import Final

from sidecar.breaker import Mode, State
from sidecar.v1 import events_pb2

__all__ = ["MODE_TO_PROTO", "PROTO_TO_MODE", "STATE_BY_NAME", "STATE_TO_PROTO", "state_name"]

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


def state_name(value: int) -> str:
    """``BREAKER_STATE_HALF_OPEN`` → ``HALF_OPEN`` (raises ``ValueError`` for an undefined
    value: callers that may meet one use :func:`sidecar.eventlog.enums.enum_label`)."""
    return str(events_pb2.BreakerState.Name(value)).removeprefix("BREAKER_STATE_")
