"""The breaker projections (read models) of the event log: pure folds of stored events.

Each is a :class:`~sidecar.eventlog.projections.base.Projection`. The projections, all keyed
per breaker ``(service, instance, upstream)``:

- ``breaker_status``: current state, since when, mode, last transition time; ConfigApplied
  makes an instance's configured upstreams known, and on ``source="start"`` resets them to
  CLOSED (a restarted sidecar's breakers start CLOSED) and forgets upstreams no longer listed.
- ``breaker_transitions``: transition counts by (from, to).
- ``breaker_open_time``: nanoseconds spent OPEN over completed periods plus the start of the
  current open period, so "seconds open at time t" includes the period still running.
- ``breaker_recovery``: time to recover = from leaving CLOSED for OPEN until CLOSED again
  (through any HALF_OPEN/OPEN cycles); sum and count give the mean time to recover.

Per (service, upstream) answers (instances open out of known, totals, MTTR) are aggregated at
query time by :class:`~sidecar.eventlog.projections.breaker_views.BreakerViews` from the
per-instance states, so they can never drift apart.

A state or mode the proto does not define (stored before Append checked enums, or by a newer
producer) is folded as ``UNKNOWN(99)``: shown, never an error; such a state is neither OPEN nor
HALF_OPEN for the per-upstream answers. The endpoint projection lives in
:mod:`sidecar.eventlog.projections.endpoints`.

The runner that folds the log into them, from checkpoints, and ``rebuild`` live in
:mod:`sidecar.eventlog.projections.runner`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from sidecar.eventlog.enums import breaker_mode_label, breaker_state_label
from sidecar.eventlog.event_protos import Payload
from sidecar.eventlog.port import StoredEvent
from sidecar.eventlog.projections.base import CountEntry, Key, Projection
from sidecar.v1 import events_pb2

CLOSED: Final = "CLOSED"
OPEN: Final = "OPEN"
HALF_OPEN: Final = "HALF_OPEN"

state_name: Final = breaker_state_label
"""``CLOSED``, ``OPEN``, ... or ``UNKNOWN(99)`` for a value this build has no name for."""
_MODE_NAMES: Final = {
    value: breaker_mode_label(value).lower() for value in events_pb2.BreakerMode.values()
}


def mode_name(value: int) -> str:
    """``enforce``, ``metrics_only``, ... or ``UNKNOWN(99)``."""
    return _MODE_NAMES.get(value) or breaker_mode_label(value)


def _breaker_key(payload: events_pb2.BreakerTransitioned | events_pb2.BreakerModeChanged) -> Key:
    return (payload.service, payload.instance, payload.upstream)


def _instance_keys(state: dict[Key, Any], service: str, instance: str) -> list[Key]:
    return [key for key in state if key[0] == service and key[1] == instance]


# --- breaker_status -----------------------------------------------------------------------


@dataclass(slots=True)
class StatusEntry:
    state: str = CLOSED
    since_ns: int = 0
    mode: str = ""
    last_transition_at_ns: int = 0
    last_position: int = 0


class BreakerStatusProjection(Projection[StatusEntry]):
    """Current state of each breaker (see the module docstring for ConfigApplied)."""

    name = "breaker_status"
    entry_type = StatusEntry

    def apply(
        self, state: dict[Key, StatusEntry], event: StoredEvent, payload: Payload | None
    ) -> None:
        at_ns, position = event.occurred_at_ns, event.global_position
        if isinstance(payload, events_pb2.BreakerTransitioned):
            entry = state.setdefault(_breaker_key(payload), StatusEntry(since_ns=at_ns))
            entry.state = state_name(payload.to_state)
            entry.since_ns = entry.last_transition_at_ns = at_ns
            if payload.mode:
                entry.mode = mode_name(payload.mode)
            entry.last_position = position
        elif isinstance(payload, events_pb2.BreakerModeChanged):
            entry = state.setdefault(_breaker_key(payload), StatusEntry(since_ns=at_ns))
            entry.mode = mode_name(payload.to_mode)
            entry.last_position = position
        elif isinstance(payload, events_pb2.ConfigApplied):
            listed = set(payload.upstreams)
            for key in _instance_keys(state, payload.service, payload.instance):
                if key[2] not in listed:
                    del state[key]
            for upstream in sorted(listed):
                key = (payload.service, payload.instance, upstream)
                entry = state.setdefault(key, StatusEntry(since_ns=at_ns))
                if payload.source == "start" and entry.state != CLOSED:
                    entry.state, entry.since_ns = CLOSED, at_ns
                entry.last_position = position


# --- breaker_transitions ------------------------------------------------------------------


class TransitionCountsProjection(Projection[CountEntry]):
    """Transition counts keyed (service, instance, upstream, from_state, to_state)."""

    name = "breaker_transitions"
    entry_type = CountEntry

    def apply(
        self, state: dict[Key, CountEntry], event: StoredEvent, payload: Payload | None
    ) -> None:
        if isinstance(payload, events_pb2.BreakerTransitioned):
            key = (
                *_breaker_key(payload),
                state_name(payload.from_state),
                state_name(payload.to_state),
            )
            entry = state.get(key)
            if entry is None:
                state[key] = entry = CountEntry()
            entry.count += 1


# --- breaker_open_time --------------------------------------------------------------------


@dataclass(slots=True)
class OpenTimeEntry:
    open_ns_total: int = 0
    is_open: bool = False
    open_since_ns: int = 0

    def close_period(self, at_ns: int) -> None:
        if self.is_open:
            self.open_ns_total += max(0, at_ns - self.open_since_ns)
            self.is_open, self.open_since_ns = False, 0

    def open_ns_at(self, now_ns: int) -> int:
        """Time spent OPEN up to ``now_ns``, the current open period included."""
        running = max(0, now_ns - self.open_since_ns) if self.is_open else 0
        return self.open_ns_total + running


class OpenTimeProjection(Projection[OpenTimeEntry]):
    """Nanoseconds each breaker spent OPEN (by the producer's clock)."""

    name = "breaker_open_time"
    entry_type = OpenTimeEntry

    def apply(
        self, state: dict[Key, OpenTimeEntry], event: StoredEvent, payload: Payload | None
    ) -> None:
        at_ns = event.occurred_at_ns
        if isinstance(payload, events_pb2.BreakerTransitioned):
            entry = state.setdefault(_breaker_key(payload), OpenTimeEntry())
            if payload.to_state == events_pb2.BREAKER_STATE_OPEN:
                if not entry.is_open:
                    entry.is_open, entry.open_since_ns = True, at_ns
            else:
                entry.close_period(at_ns)
        elif isinstance(payload, events_pb2.ConfigApplied):
            listed = set(payload.upstreams)
            for key in _instance_keys(state, payload.service, payload.instance):
                if payload.source == "start" or key[2] not in listed:
                    state[key].close_period(at_ns)


# --- breaker_recovery ---------------------------------------------------------------------


@dataclass(slots=True)
class RecoveryEntry:
    recoveries: int = 0
    recovery_ns_total: int = 0
    in_incident: bool = False
    incident_start_ns: int = 0


class RecoveryProjection(Projection[RecoveryEntry]):
    """Completed recoveries (OPEN ... -> CLOSED) and their total duration, per breaker."""

    name = "breaker_recovery"
    entry_type = RecoveryEntry

    def apply(
        self, state: dict[Key, RecoveryEntry], event: StoredEvent, payload: Payload | None
    ) -> None:
        at_ns = event.occurred_at_ns
        if isinstance(payload, events_pb2.BreakerTransitioned):
            entry = state.setdefault(_breaker_key(payload), RecoveryEntry())
            if payload.to_state == events_pb2.BREAKER_STATE_OPEN and not entry.in_incident:
                entry.in_incident, entry.incident_start_ns = True, at_ns
            elif payload.to_state == events_pb2.BREAKER_STATE_CLOSED and entry.in_incident:
                entry.recoveries += 1
                entry.recovery_ns_total += max(0, at_ns - entry.incident_start_ns)
                entry.in_incident, entry.incident_start_ns = False, 0
        elif isinstance(payload, events_pb2.ConfigApplied):
            listed = set(payload.upstreams)
            for key in _instance_keys(state, payload.service, payload.instance):
                if payload.source == "start" or key[2] not in listed:
                    # The breaker was reset or removed, not recovered: no sample.
                    state[key].in_incident, state[key].incident_start_ns = False, 0


def default_projections() -> list[Projection[Any]]:
    """Fresh instances of every breaker projection."""
    return [
        BreakerStatusProjection(),
        TransitionCountsProjection(),
        OpenTimeProjection(),
        RecoveryProjection(),
    ]
