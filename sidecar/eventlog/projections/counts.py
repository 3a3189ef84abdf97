"""The counting projections the server keeps beside the breaker ones.

``EventCountsProjection`` counts events per ``type`` (``eventlog_events_appended_total``);
``UnknownValuesProjection`` counts stored enum values the proto does not define, per field
(``eventlog_unknown_values_total``). Both fold the log like every projection, so a rebuild or a
restart can never double-count.
"""

from __future__ import annotations

from sidecar.eventlog.enums import unknown_enum_values
from sidecar.eventlog.event_protos import PAYLOAD_KINDS, Payload
from sidecar.eventlog.port import StoredEvent
from sidecar.eventlog.projections.base import CountEntry, Key, Projection

__all__ = ["EventCountsProjection", "UnknownValuesProjection"]


class EventCountsProjection(Projection[CountEntry]):
    """Events in the log per ``type`` (key: ``(type,)``)."""

    name = "event_counts"
    entry_type = CountEntry

    def apply(
        self, state: dict[Key, CountEntry], event: StoredEvent, payload: Payload | None
    ) -> None:
        entry = state.get((event.type,))
        if entry is None:
            state[(event.type,)] = entry = CountEntry()
        entry.count += 1


class UnknownValuesProjection(Projection[CountEntry]):
    """Stored enum values the proto does not define, per field (key:
    ``("breaker_transitioned.to_state",)``): events stored before Append checked enums, or by
    a producer built from a newer proto. Readers show such a value as ``UNKNOWN(n)``."""

    name = "unknown_values"
    entry_type = CountEntry

    def apply(
        self, state: dict[Key, CountEntry], event: StoredEvent, payload: Payload | None
    ) -> None:
        if payload is None:
            return
        oneof_field = PAYLOAD_KINDS[event.type].oneof_field
        for unknown in unknown_enum_values(payload):
            key = (f"{oneof_field}.{unknown.field}",)
            entry = state.get(key)
            if entry is None:
                state[key] = entry = CountEntry()
            entry.count += 1
