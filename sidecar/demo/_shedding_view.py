"""Shedding periods as ``sidecar demo`` shows them: one line when an upstream's adaptive limit
starts shedding, one when it stops, and the periods for the summary.

Two sources, the event log preferred (as for ejections, :mod:`sidecar.demo._endpoints_view`):

- the event log's ``LoadShedding`` events (``phase`` ``started`` / ``stopped``):
  :meth:`SheddingWatch.from_log` makes the line;
- the admin API's ``ConcurrencyLimit.shedding``, polled with every frame: a change seen there
  waits ``hold_s`` for its event from the log, and is printed from the admin API (marked so)
  only when none comes (a sidecar that does not ship the event).

Pure code on injected clocks, called from the demo's event loop only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sidecar.demo._resilience_view import ResilienceRow

__all__ = ["STARTED", "STOPPED", "SheddingLine", "SheddingPeriod", "SheddingWatch"]

STARTED: Final = "started"
STOPPED: Final = "stopped"
LOG_WAIT_S: Final = 2.5
"""How long a change seen in the admin API waits for its ``LoadShedding`` event."""


@dataclass(frozen=True, slots=True)
class SheddingLine:
    """Shedding started or stopped, from the event log (``position`` > 0) or the admin API."""

    kind: str  # started | stopped
    elapsed_s: float
    phase: str
    upstream: str
    limit: int
    in_flight: int
    shed: int
    """Calls shed in this period so far (the whole period on ``stopped``)."""
    algorithm: str
    duration_s: float = 0.0
    position: int = 0
    trace_id: str = ""

    def _what(self) -> str:
        if self.kind == STARTED:
            return (f"shedding started: limit {self.limit} ({self.algorithm}), "
                    f"{self.in_flight} in flight; calls over it refused at once")
        return (f"shedding stopped after {self.duration_s:.1f}s: {self.shed} calls shed, "
                f"limit {self.limit} ({self.algorithm})")

    def _where(self) -> str:
        if not self.position:
            return "(seen in the admin API)"
        trace = f" trace {self.trace_id[:16]}" if self.trace_id else ""
        return f"(log #{self.position}{trace})"

    def text(self) -> str:
        return (f"{self.elapsed_s:6.1f}s  [{self.phase:>8}]  {self.upstream:<10} "
                f"{self._what()}  {self._where()}")

    def short(self) -> str:
        where = f"  log #{self.position}" if self.position else "  (admin API)"
        return f"{self.elapsed_s:6.1f}s {self.phase:>8}  {self.upstream:<10} {self._what()}{where}"


@dataclass(frozen=True, slots=True)
class SheddingPeriod:
    upstream: str
    started_s: float
    stopped_s: float | None
    """None: still shedding when the demo stopped."""
    shed: int


class SheddingWatch:
    """Turns ``LoadShedding`` events and admin polls into lines, each change printed once.

    ``phase_of(elapsed_s)`` names the phase to print (``catalog``'s load phase); events from
    before ``not_before_wall`` (default: ``started_at_wall``) belong to an earlier run.

    Example::

        watch = SheddingWatch(phase_of, started_at_wall)
        line = watch.from_log(event)           # from the LogFollower
        watch.observe(resilience_rows, elapsed_s)
        for line in watch.due(elapsed_s):
            view.note(line)
    """

    def __init__(self, phase_of: Callable[[float], str], started_at_wall: float, *,
                 hold_s: float = LOG_WAIT_S, not_before_wall: float | None = None) -> None:
        self._phase_of = phase_of
        self.started_at_wall = started_at_wall
        self._not_before_wall = started_at_wall if not_before_wall is None else not_before_wall
        self._hold_s = hold_s
        self._shedding: dict[str, bool] = {}
        self._log_counts: dict[tuple[str, str], int] = {}
        self._admin_counts: dict[tuple[str, str], int] = {}
        self._pending: dict[tuple[str, str, int], SheddingLine] = {}
        self._admin_started: dict[str, tuple[float, int]] = {}
        self.lines: list[SheddingLine] = []
        """Every line handed out, in order (the summary's periods come from them)."""

    def _out(self, line: SheddingLine) -> SheddingLine:
        self.lines.append(line)
        return line

    def from_log(self, event: Any) -> SheddingLine | None:
        """The line for a ``LoadShedding`` event (None for any other event, one from before
        this run, or one whose change was already printed from the admin API)."""
        if event.WhichOneof("payload") != "load_shedding":
            return None
        payload = event.load_shedding
        occurred = event.occurred_at.seconds + event.occurred_at.nanos / 1e9
        if occurred < self._not_before_wall or payload.phase not in (STARTED, STOPPED):
            return None
        elapsed = max(0.0, occurred - self.started_at_wall)
        line = SheddingLine(
            kind=payload.phase, elapsed_s=elapsed, phase=self._phase_of(elapsed),
            upstream=payload.upstream, limit=payload.limit, in_flight=payload.in_flight,
            shed=payload.shed, algorithm=payload.algorithm,
            duration_s=payload.duration_ms / 1000.0, position=event.global_position,
            trace_id=event.trace_id)
        key = (line.kind, line.upstream)
        count = self._log_counts[key] = self._log_counts.get(key, 0) + 1
        if self._pending.pop((*key, count), None) is None and (
                self._admin_counts.get(key, 0) >= count):
            return None  # already printed from the admin API (the log was late): once only
        return self._out(line)

    def observe(self, rows: Sequence[ResilienceRow], elapsed_s: float) -> None:
        """Queue the shedding changes between the last poll and this one."""
        for row in rows:
            if not row.adaptive:
                continue
            was = self._shedding.get(row.upstream, False)
            self._shedding[row.upstream] = row.shedding
            if row.shedding == was:
                continue
            kind = STARTED if row.shedding else STOPPED
            key = (kind, row.upstream)
            count = self._admin_counts[key] = self._admin_counts.get(key, 0) + 1
            if row.shedding:
                self._admin_started[row.upstream] = (elapsed_s, row.shed)
            began_s, shed_before = self._admin_started.get(row.upstream, (elapsed_s, row.shed))
            if self._log_counts.get(key, 0) >= count:
                continue  # the log already told
            self._pending[(*key, count)] = SheddingLine(
                kind=kind, elapsed_s=elapsed_s, phase=self._phase_of(elapsed_s),
                upstream=row.upstream, limit=row.limit, in_flight=row.in_flight,
                shed=0 if row.shedding else max(0, row.shed - shed_before),
                algorithm=row.algorithm,
                duration_s=0.0 if row.shedding else elapsed_s - began_s)

    def due(self, elapsed_s: float) -> list[SheddingLine]:
        """Changes seen in the admin API whose event did not come from the log in time."""
        ready = [key for key, line in self._pending.items()
                 if elapsed_s - line.elapsed_s >= self._hold_s]
        ready.sort(key=lambda k: self._pending[k].elapsed_s)
        return [self._out(self._pending.pop(key)) for key in ready]

    def flush(self) -> list[SheddingLine]:
        """Everything still waiting (the demo is stopping)."""
        return self.due(float("inf"))

    def periods(self) -> list[SheddingPeriod]:
        """The shedding periods, from the lines handed out (a ``stopped`` without its
        ``started``, e.g. a period begun before the demo, counts from its duration)."""
        periods: list[SheddingPeriod] = []
        open_at: dict[str, float] = {}
        for line in sorted(self.lines, key=lambda item: item.elapsed_s):
            if line.kind == STARTED:
                open_at[line.upstream] = line.elapsed_s
                continue
            began = open_at.pop(line.upstream, max(0.0, line.elapsed_s - line.duration_s))
            periods.append(SheddingPeriod(line.upstream, began, line.elapsed_s, line.shed))
        for upstream, began in open_at.items():
            periods.append(SheddingPeriod(upstream, began, None, 0))
        return sorted(periods, key=lambda p: (p.upstream, p.started_s))
