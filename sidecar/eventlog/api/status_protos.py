"""Proto answers built from the projections' views, and the ReadAll filter from its proto.

Pure conversions used by :mod:`sidecar.eventlog.api.service` (GetBreakerStatus, ListBreakerStatus,
ReadAll, Subscribe); no I/O.
"""

from __future__ import annotations

from typing import Any, Final

from sidecar.breaker_protos import STATE_BY_NAME
from sidecar.eventlog.port import NO_FILTER, EventFilter
from sidecar.eventlog.projections.breaker_views import InstanceStatus, UpstreamStatus
from sidecar.v1 import eventlog_pb2, events_pb2

_UNSPECIFIED: Final = events_pb2.BREAKER_STATE_UNSPECIFIED
_STATE_ENUM: Final = STATE_BY_NAME


def _timestamp(message: Any, ns: int) -> None:
    message.seconds, message.nanos = divmod(ns, 1_000_000_000)


def _transition_counts(
    counts: tuple[tuple[str, str, int], ...],
) -> list[eventlog_pb2.TransitionCount]:
    return [
        eventlog_pb2.TransitionCount(
            from_state=_STATE_ENUM.get(f, _UNSPECIFIED),
            to_state=_STATE_ENUM.get(t, _UNSPECIFIED),
            count=n,
        )
        for f, t, n in counts
    ]


def instance_status_proto(status: InstanceStatus) -> eventlog_pb2.InstanceBreakerStatus:
    """The wire form of one breaker's projected status."""
    message = eventlog_pb2.InstanceBreakerStatus(
        service=status.service,
        instance=status.instance,
        upstream=status.upstream,
        state=_STATE_ENUM.get(status.state, _UNSPECIFIED),
        transitions=status.transitions,
        seconds_open=status.seconds_open,
        mean_time_to_recover_s=status.mean_time_to_recover_s,
        recoveries=status.recoveries,
        transition_counts=_transition_counts(status.transition_counts),
    )
    if status.open_since_ns:
        _timestamp(message.open_since, status.open_since_ns)
    if status.last_transition_at_ns:
        _timestamp(message.last_transition_at, status.last_transition_at_ns)
    return message


def upstream_status_proto(status: UpstreamStatus) -> eventlog_pb2.UpstreamBreakerStatus:
    """The wire form of one (service, upstream)'s projected status."""
    message = eventlog_pb2.UpstreamBreakerStatus(
        service=status.service,
        upstream=status.upstream,
        state=_STATE_ENUM.get(status.state, _UNSPECIFIED),
        instances_open=status.instances_open,
        instances_known=status.instances_known,
        transitions=status.transitions,
        seconds_open=status.seconds_open,
        mean_time_to_recover_s=status.mean_time_to_recover_s,
        recoveries=status.recoveries,
        transition_counts=_transition_counts(status.transition_counts),
        instances=[instance_status_proto(i) for i in status.instances],
    )
    if status.open_since_ns:
        _timestamp(message.open_since, status.open_since_ns)
    return message


def filter_from_proto(flt: eventlog_pb2.EventFilter) -> EventFilter:
    """The store filter for a validated request filter (unset times are unbounded)."""
    if not flt.ListFields():
        return NO_FILTER
    return EventFilter(
        service=flt.service,
        instance=flt.instance,
        upstream=flt.upstream,
        types=tuple(flt.types),
        from_time_ns=flt.from_time.ToNanoseconds() if flt.HasField("from_time") else 0,
        to_time_ns=flt.to_time.ToNanoseconds() if flt.HasField("to_time") else 0,
    )
