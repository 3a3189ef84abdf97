"""The endpoint projection of the event log: ejections and the endpoints ejected now.

``endpoint_ejections`` folds the outlier-detection events of every sidecar, keyed per
``(service, instance, upstream)`` like the breaker projections, into a small
:class:`EjectionEntry`:

- ``EndpointEjected`` counts one ejection and puts the endpoint in the ejected set (ejected
  again while still out, e.g. a lost ``EndpointReturned``: counted, but in the set once);
- ``EndpointReturned`` takes the endpoint out of the set;
- ``EndpointsChanged`` makes the upstream known, and an endpoint it removes is no longer
  ejected (it has left the balancer);
- ``ConfigApplied`` makes each listed upstream known (so its counts start at 0); on
  ``source="start"`` the instance's ejected sets are emptied (a restarted sidecar's balancer
  starts with every endpoint in), and an upstream no longer listed has nothing ejected.
  Ejection counts are never forgotten: a counter never goes down.

The runner (:class:`~sidecar.eventlog.projections.runner.ProjectionRunner`) keeps its checkpoint and
rebuilds it like every other projection; :class:`EndpointViews` answers per (service, upstream)
by summing the instances at query time, so the per-instance state and the totals never drift.

Pure folds, no I/O; the state serializes canonically (the ejected sets as sorted lists).

Example::

    runner = ProjectionRunner(store, [EndpointEjectionsProjection()])
    await runner.catch_up()
    views = EndpointViews(runner.state(EndpointEjectionsProjection.name))
    views.ejected_now()      # {("checkout", "payments"): 1}
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from sidecar.eventlog.event_protos import Payload
from sidecar.eventlog.port import StoredEvent
from sidecar.eventlog.projections.base import Key, Projection
from sidecar.v1 import events_pb2


@dataclass(slots=True)
class EjectionEntry:
    ejections: int = 0
    """Ejections of this instance's endpoints of the upstream, ever."""
    ejected: list[str] = field(default_factory=list)
    """Endpoints ejected now, sorted."""


def _remove(ejected: list[str], endpoint: str) -> None:
    index = bisect.bisect_left(ejected, endpoint)
    if index < len(ejected) and ejected[index] == endpoint:
        del ejected[index]


class EndpointEjectionsProjection(Projection[EjectionEntry]):
    """Ejections and currently ejected endpoints per (service, instance, upstream)."""

    name = "endpoint_ejections"
    entry_type = EjectionEntry

    def apply(
        self, state: dict[Key, EjectionEntry], event: StoredEvent, payload: Payload | None
    ) -> None:
        if isinstance(payload, events_pb2.EndpointEjected):
            entry = _entry(state, payload.service, payload.instance, payload.upstream)
            entry.ejections += 1
            index = bisect.bisect_left(entry.ejected, payload.endpoint)
            if index == len(entry.ejected) or entry.ejected[index] != payload.endpoint:
                entry.ejected.insert(index, payload.endpoint)
        elif isinstance(payload, events_pb2.EndpointReturned):
            entry = _entry(state, payload.service, payload.instance, payload.upstream)
            _remove(entry.ejected, payload.endpoint)
        elif isinstance(payload, events_pb2.EndpointsChanged):
            entry = _entry(state, payload.service, payload.instance, payload.upstream)
            for endpoint in payload.removed:
                _remove(entry.ejected, endpoint)
        elif isinstance(payload, events_pb2.ConfigApplied):
            listed = set(payload.upstreams)
            for key, entry in state.items():
                if key[0] == payload.service and key[1] == payload.instance and (
                    payload.source == "start" or key[2] not in listed
                ):
                    entry.ejected.clear()
            for upstream in sorted(listed):
                _entry(state, payload.service, payload.instance, upstream)


def _entry(state: dict[Key, EjectionEntry], service: str, instance: str,
           upstream: str) -> EjectionEntry:
    key = (service, instance, upstream)
    entry = state.get(key)
    if entry is None:
        state[key] = entry = EjectionEntry()
    return entry


@dataclass(frozen=True, slots=True)
class EjectedEndpoint:
    service: str
    instance: str
    upstream: str
    endpoint: str


class EndpointViews:
    """Read-only answers from the ``endpoint_ejections`` state (no I/O)."""

    def __init__(self, ejections: dict[Key, EjectionEntry]) -> None:
        self._state = ejections

    def ejection_totals(self) -> dict[tuple[str, str], int]:
        """Ejections per (service, upstream), summed over instances; every known upstream is
        there, at 0 before its first ejection."""
        totals: dict[tuple[str, str], int] = {}
        for (service, _instance, upstream), entry in self._state.items():
            key = (service, upstream)
            totals[key] = totals.get(key, 0) + entry.ejections
        return dict(sorted(totals.items()))

    def ejected_now(self) -> dict[tuple[str, str], int]:
        """Endpoints ejected now per (service, upstream), summed over instances (each instance
        ejects on its own: two instances ejecting one endpoint count 2); known upstreams with
        nothing ejected count 0."""
        totals: dict[tuple[str, str], int] = {}
        for (service, _instance, upstream), entry in self._state.items():
            key = (service, upstream)
            totals[key] = totals.get(key, 0) + len(entry.ejected)
        return dict(sorted(totals.items()))

    def ejected(self, *, service: str = "", upstream: str = "") -> list[EjectedEndpoint]:
        """Every endpoint ejected now, sorted by (service, instance, upstream, endpoint)."""
        return [
            EjectedEndpoint(svc, inst, up, endpoint)
            for (svc, inst, up), entry in sorted(self._state.items())
            if (not service or svc == service) and (not upstream or up == upstream)
            for endpoint in entry.ejected
        ]
