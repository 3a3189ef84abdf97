"""The shedding projection of the event log: load-shedding periods of the adaptive limits.

``load_shedding`` folds the ``LoadShedding`` events of every sidecar, keyed per
``(service, instance, upstream)`` like the endpoint and breaker projections, into a small
:class:`SheddingEntry`:

- ``phase="started"`` counts one shedding period and marks the upstream shedding now (a second
  ``started`` without a ``stopped`` in between, e.g. a sidecar that died while shedding and
  restarted, is a new period: counted, the upstream stays shedding once);
- ``phase="stopped"`` ends it and adds the period's shed calls and its length (the producer's
  ``duration_ms``) to the totals;
- ``ConfigApplied`` makes each listed upstream known (its counts start at 0); on
  ``source="start"`` nothing of the instance is shedding any more (a restarted sidecar's
  limiter starts fresh), and an upstream no longer listed is not shedding. Totals are never
  forgotten: a counter never goes down.

Calls shed in a period that has not stopped yet are not in the totals (the ``stopped`` event
carries the whole period); the period itself is counted at its start.

The runner keeps its checkpoint and rebuilds it like every other projection;
:class:`SheddingViews` answers per (service, upstream) by summing the instances at query time.
Pure folds, no I/O.

Example::

    runner = ProjectionRunner(store, [SheddingPeriodsProjection()])
    await runner.catch_up()
    SheddingViews(runner.state(SheddingPeriodsProjection.name)).shedding_now()
    # {("checkout", "catalog"): 1}
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.eventlog.event_protos import Payload
from sidecar.eventlog.port import StoredEvent
from sidecar.eventlog.projections.base import Key, Projection
from sidecar.v1 import events_pb2


@dataclass(slots=True)
class SheddingEntry:
    periods: int = 0
    """Shedding periods started, ever."""
    shed: int = 0
    """Calls shed in the periods that stopped."""
    shedding_ms: int = 0
    """Summed length of the periods that stopped, by the producer's clock."""
    shedding: bool = False
    """A period started and has not stopped."""


class SheddingPeriodsProjection(Projection[SheddingEntry]):
    """Shedding periods, shed calls and time spent shedding per (service, instance, upstream)."""

    name = "load_shedding"
    entry_type = SheddingEntry

    def apply(
        self, state: dict[Key, SheddingEntry], event: StoredEvent, payload: Payload | None
    ) -> None:
        if isinstance(payload, events_pb2.LoadShedding):
            entry = _entry(state, payload.service, payload.instance, payload.upstream)
            if payload.phase == "started":
                entry.periods += 1
                entry.shedding = True
            elif payload.phase == "stopped":
                entry.shed += payload.shed
                entry.shedding_ms += payload.duration_ms
                entry.shedding = False
        elif isinstance(payload, events_pb2.ConfigApplied):
            listed = set(payload.upstreams)
            for key, entry in state.items():
                if key[0] == payload.service and key[1] == payload.instance and (
                    payload.source == "start" or key[2] not in listed
                ):
                    entry.shedding = False
            for upstream in sorted(listed):
                _entry(state, payload.service, payload.instance, upstream)


def _entry(state: dict[Key, SheddingEntry], service: str, instance: str,
           upstream: str) -> SheddingEntry:
    key = (service, instance, upstream)
    entry = state.get(key)
    if entry is None:
        state[key] = entry = SheddingEntry()
    return entry


@dataclass(frozen=True, slots=True)
class SheddingTotals:
    periods: int
    shed: int
    shedding_s: float
    shedding_now: int
    """Instances of the service shedding calls to the upstream now."""


class SheddingViews:
    """Read-only answers from the ``load_shedding`` state (no I/O)."""

    def __init__(self, state: dict[Key, SheddingEntry]) -> None:
        self._state = state

    def totals(self) -> dict[tuple[str, str], SheddingTotals]:
        """Per (service, upstream), summed over instances; every known upstream is there, at 0
        before its first period."""
        sums: dict[tuple[str, str], list[int]] = {}
        for (service, _instance, upstream), entry in self._state.items():
            acc = sums.setdefault((service, upstream), [0, 0, 0, 0])
            acc[0] += entry.periods
            acc[1] += entry.shed
            acc[2] += entry.shedding_ms
            acc[3] += entry.shedding
        return {key: SheddingTotals(p, s, ms / 1000, now)
                for key, (p, s, ms, now) in sorted(sums.items())}

    def shedding_now(self) -> dict[tuple[str, str], int]:
        return {key: t.shedding_now for key, t in self.totals().items()}
