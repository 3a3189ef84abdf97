"""Queries over the breaker projections: per breaker and per (service, upstream), as of a time.

:class:`BreakerViews` reads the states of the four breaker projections of
:mod:`sidecar.eventlog.projections.breakers` (``ProjectionRunner.views()`` makes one) and aggregates
per (service, upstream) at query time, so the per-instance state and the totals can never drift
apart. Read-only, no I/O; call on the loop that owns the projections.

Example::

    views = runner.views()
    views.upstreams(now_ns=time.time_ns(), service="checkout")
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.eventlog.projections.base import CountEntry, Key
from sidecar.eventlog.projections.breakers import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    OpenTimeEntry,
    RecoveryEntry,
    StatusEntry,
)


@dataclass(frozen=True, slots=True)
class InstanceStatus:
    """One breaker of one sidecar instance, as of ``now_ns`` (mirrors InstanceBreakerStatus)."""

    service: str
    instance: str
    upstream: str
    state: str
    since_ns: int
    open_since_ns: int  # 0 unless OPEN
    mode: str
    transitions: int
    seconds_open: float
    recoveries: int
    mean_time_to_recover_s: float
    last_transition_at_ns: int
    transition_counts: tuple[tuple[str, str, int], ...]  # (from, to, count), sorted


@dataclass(frozen=True, slots=True)
class UpstreamStatus:
    """One upstream of one service over all its instances (mirrors UpstreamBreakerStatus).

    ``state`` is OPEN when any instance is OPEN, else HALF_OPEN when any is, else CLOSED.
    """

    service: str
    upstream: str
    state: str
    open_since_ns: int  # earliest open_since of the instances now OPEN, 0 when none
    instances_open: int
    instances_known: int
    transitions: int
    seconds_open: float
    recoveries: int
    mean_time_to_recover_s: float
    transition_counts: tuple[tuple[str, str, int], ...]
    instances: tuple[InstanceStatus, ...]


class BreakerViews:
    """Read-only answers from the four breaker projections' states (no I/O)."""

    def __init__(
        self,
        status: dict[Key, StatusEntry],
        transitions: dict[Key, CountEntry],
        open_time: dict[Key, OpenTimeEntry],
        recovery: dict[Key, RecoveryEntry],
    ) -> None:
        self._status = status
        self._transitions = transitions
        self._open_time = open_time
        self._recovery = recovery

    def instances(
        self, now_ns: int, *, service: str = "", upstream: str = ""
    ) -> list[InstanceStatus]:
        """Every known breaker matching the filters, sorted by (service, instance, upstream)."""
        counts: dict[Key, list[tuple[str, str, int]]] = {}
        for (svc, inst, up, from_state, to_state), count in self._transitions.items():
            counts.setdefault((svc, inst, up), []).append((from_state, to_state, count.count))
        result = []
        for key, entry in sorted(self._status.items()):
            svc, inst, up = key
            if (service and svc != service) or (upstream and up != upstream):
                continue
            open_time = self._open_time.get(key, OpenTimeEntry())
            recovery = self._recovery.get(key, RecoveryEntry())
            key_counts = tuple(sorted(counts.get(key, [])))
            result.append(
                InstanceStatus(
                    service=svc,
                    instance=inst,
                    upstream=up,
                    state=entry.state,
                    since_ns=entry.since_ns,
                    open_since_ns=entry.since_ns if entry.state == OPEN else 0,
                    mode=entry.mode,
                    transitions=sum(c for _, _, c in key_counts),
                    seconds_open=open_time.open_ns_at(now_ns) / 1e9,
                    recoveries=recovery.recoveries,
                    mean_time_to_recover_s=_mean_s(recovery.recovery_ns_total, recovery.recoveries),
                    last_transition_at_ns=entry.last_transition_at_ns,
                    transition_counts=key_counts,
                )
            )
        return result

    def upstreams(
        self, now_ns: int, *, service: str = "", upstream: str = ""
    ) -> list[UpstreamStatus]:
        """Per (service, upstream) aggregates, sorted; filters as in ``instances``."""
        groups: dict[tuple[str, str], list[InstanceStatus]] = {}
        for status in self.instances(now_ns, service=service, upstream=upstream):
            groups.setdefault((status.service, status.upstream), []).append(status)
        result = []
        for (svc, up), members in sorted(groups.items()):
            states = {m.state for m in members}
            state = OPEN if OPEN in states else HALF_OPEN if HALF_OPEN in states else CLOSED
            open_since = [m.open_since_ns for m in members if m.state == OPEN]
            totals: dict[tuple[str, str], int] = {}
            for member in members:
                for from_state, to_state, count in member.transition_counts:
                    totals[(from_state, to_state)] = totals.get((from_state, to_state), 0) + count
            recovery_ns = sum(
                self._recovery.get((svc, m.instance, up), RecoveryEntry()).recovery_ns_total
                for m in members
            )
            recoveries = sum(m.recoveries for m in members)
            result.append(
                UpstreamStatus(
                    service=svc,
                    upstream=up,
                    state=state,
                    open_since_ns=min(open_since, default=0),
                    instances_open=len(open_since),
                    instances_known=len(members),
                    transitions=sum(m.transitions for m in members),
                    seconds_open=sum(m.seconds_open for m in members),
                    recoveries=recoveries,
                    mean_time_to_recover_s=_mean_s(recovery_ns, recoveries),
                    transition_counts=tuple(sorted((f, t, c) for (f, t), c in totals.items())),
                    instances=tuple(members),
                )
            )
        return result

    def open_seconds_total(self, now_ns: int) -> dict[tuple[str, str], float]:
        """Seconds OPEN per (service, upstream), summed over instances, current open periods up
        to ``now_ns`` included; known breakers that never opened count 0, removed breakers keep
        their history (a counter never goes down)."""
        totals: dict[tuple[str, str], int] = {(svc, up): 0 for svc, _inst, up in self._status}
        for (svc, _inst, up), entry in self._open_time.items():
            totals[(svc, up)] = totals.get((svc, up), 0) + entry.open_ns_at(now_ns)
        return {key: ns / 1e9 for key, ns in sorted(totals.items())}

    def recovery_totals(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(completed recoveries, their summed duration in ns) per (service, upstream), summed
        over instances. A recovery runs from a breaker's trip (OPEN while not already in an
        incident) to its next CLOSED, HALF_OPEN probes and re-trips included. Like
        ``open_seconds_total``: known breakers without a recovery count (0, 0), removed
        breakers keep their history (the totals never go down)."""
        totals: dict[tuple[str, str], tuple[int, int]] = {
            (svc, up): (0, 0) for svc, _inst, up in self._status
        }
        for (svc, _inst, up), entry in self._recovery.items():
            count, ns = totals.get((svc, up), (0, 0))
            totals[(svc, up)] = (count + entry.recoveries, ns + entry.recovery_ns_total)
        return dict(sorted(totals.items()))

    def transition_totals(self) -> dict[tuple[str, str, str, str], int]:
        """Transition counts per (service, upstream, from_state, to_state) over all instances."""
        totals: dict[tuple[str, str, str, str], int] = {}
        for (svc, _inst, up, from_state, to_state), entry in self._transitions.items():
            key = (svc, up, from_state, to_state)
            totals[key] = totals.get(key, 0) + entry.count
        return dict(sorted(totals.items()))


def _mean_s(total_ns: int, count: int) -> float:
    return total_ns / count / 1e9 if count else 0.0
