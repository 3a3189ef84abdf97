"""Retries and the adaptive limit as ``sidecar demo`` shows them.

Two stories of the demo:

- ``orders``: one of three replicas sickens and every call it fails is retried on another
  (``retry``), so the host app sees no failure even before the replica is ejected. From the
  admin API's ``BreakerInfo.retry_budget`` the view shows retries per second and what is
  left of the budget; :class:`MaskWatch` makes the line that tells how many failures of the
  sick replica the retries hid from the callers, a moment into its sick spell and again when
  the spell ends.
- ``catalog``: offered three times its capacity, the adaptive limit
  (``BreakerInfo.concurrency``) falls towards what it can serve and sheds the rest at once
  (the lines when shedding starts and stops come from the event log: see
  :mod:`sidecar.demo._shedding_view`).

Pure code on injected clocks, called from the demo's event loop only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from rich.table import Table
from rich.text import Text

__all__ = ["MaskLine", "MaskWatch", "ResilienceRow", "ResilienceWatch", "resilience_status",
           "resilience_table"]

RATE_WINDOW_S: Final = 2.0
MASK_REPORT_AFTER_S: Final = 1.5
"""How long into the sick spell the first masking line waits (the first failures and their
retries have happened by then, and the replica is usually ejected)."""
FIXED: Final = "fixed"


@dataclass(frozen=True, slots=True)
class ResilienceRow:
    """One upstream's retries and limit, from the admin API, with rates from successive polls."""

    upstream: str
    retries: int | None = None
    """Retries granted since the sidecar started (None: the upstream does not retry)."""
    retries_per_s: float = 0.0
    budget_available: float = 0.0
    budget_exhausted: int = 0
    algorithm: str = ""
    """``gradient2`` / ``vegas`` (an adaptive limit), ``fixed``, or empty when unknown."""
    limit: int = 0
    in_flight: int = 0
    shed: int = 0
    """Calls shed by the adaptive limit since the sidecar started."""
    shed_per_s: float = 0.0
    shedding: bool = False

    @property
    def adaptive(self) -> bool:
        return self.algorithm not in ("", FIXED)


@dataclass
class _Samples:
    points: deque[tuple[float, int]] = field(default_factory=deque)

    def rate(self, now: float, value: int) -> float:
        self.points.append((now, value))
        while len(self.points) > 2 and self.points[1][0] <= now - RATE_WINDOW_S:
            self.points.popleft()
        first_at, first = self.points[0]
        return (value - first) / (now - first_at) if now > first_at else 0.0


class ResilienceWatch:
    """Turns ``ListBreakersResponse`` polls into one row per upstream that retries or has an
    adaptive limit (with ``per_method`` breakers, the upstream's first breaker speaks for it:
    budget and limit are upstream-wide).

    Example::

        watch = ResilienceWatch()
        rows = watch.observe(list_breakers_response, time.monotonic())
    """

    def __init__(self) -> None:
        self._retries: dict[str, _Samples] = {}
        self._shed: dict[str, _Samples] = {}
        self.last: dict[str, ResilienceRow] = {}
        """The latest row of each upstream (the summary reads it)."""

    def observe(self, response: Any, monotonic_s: float) -> list[ResilienceRow]:
        rows: dict[str, ResilienceRow] = {}
        for info in response.breakers:
            upstream = info.upstream or info.name
            if upstream in rows:
                continue
            has_budget = info.HasField("retry_budget")
            limit = info.concurrency if info.HasField("concurrency") else None
            adaptive = limit is not None and limit.algorithm not in ("", FIXED)
            if not has_budget and not adaptive:
                continue
            row = ResilienceRow(upstream)
            if has_budget:
                budget = info.retry_budget
                retries = int(budget.retries)
                samples = self._retries.setdefault(upstream, _Samples())
                row = ResilienceRow(
                    upstream, retries=retries, retries_per_s=samples.rate(monotonic_s, retries),
                    budget_available=budget.available, budget_exhausted=int(budget.exhausted))
            if limit is not None and adaptive:
                shed = int(limit.shed)
                samples = self._shed.setdefault(upstream, _Samples())
                row = ResilienceRow(
                    upstream, retries=row.retries, retries_per_s=row.retries_per_s,
                    budget_available=row.budget_available,
                    budget_exhausted=row.budget_exhausted, algorithm=limit.algorithm,
                    limit=int(limit.limit), in_flight=int(limit.in_flight), shed=shed,
                    shed_per_s=samples.rate(monotonic_s, shed), shedding=limit.shedding)
            rows[upstream] = self.last[upstream] = row
        return sorted(rows.values(), key=lambda r: r.upstream)


# --- the sick replica's spell, masked by retries ---------------------------------------------

@dataclass(frozen=True, slots=True)
class MaskLine:
    """How many failures of the sick replica were retried, and what the callers saw."""

    elapsed_s: float
    phase: str
    upstream: str
    replica: str
    replica_failures: int
    retries: int
    callers_failed: int
    budget_available: float | None
    over: bool = False
    """The sick spell ended: the numbers are the whole spell's."""

    def _what(self) -> str:
        spell = "sick spell over: " if self.over else ""
        failures = f"{self.replica_failures} failures of {self.replica}"
        if self.retries:
            told = (f"{failures} retried on another replica; callers saw "
                    f"{self.callers_failed} failures")
        else:
            told = f"{failures}, none retried; callers saw {self.callers_failed} failures"
        budget = ("" if self.budget_available is None
                  else f", budget {self.budget_available:.0f} left")
        return f"{spell}{told}  ({self.retries} retries{budget})"

    def text(self) -> str:
        return f"{self.elapsed_s:6.1f}s  [{self.phase:>8}]  {self.upstream:<10} {self._what()}"

    def short(self) -> str:
        return f"{self.elapsed_s:6.1f}s {self.phase:>8}  {self.upstream:<10} {self._what()}"


@dataclass
class _Spell:
    started_s: float
    replica_failures: int
    retries: int
    callers_failed: int
    reported: bool = False


class MaskWatch:
    """Follows ``upstream``'s sick replica through its ``sick_phase``: a line
    ``MASK_REPORT_AFTER_S`` into each spell and one when it ends, each counting from the
    spell's start (failures of the replica from the admin API's ``ListEndpoints``, retries
    from ``retry_budget``, the callers' failures from the load generator).

    Example::

        mask = MaskWatch("orders", "orders-2")
        for line in mask.observe(elapsed, phase.name, failures, retries, callers_failed, 12.0):
            view.note(line)
    """

    def __init__(self, upstream: str, replica: str, sick_phase: str = "sick", *,
                 report_after_s: float = MASK_REPORT_AFTER_S) -> None:
        self.upstream = upstream
        self.replica = replica
        self._sick_phase = sick_phase
        self._report_after_s = report_after_s
        self._spell: _Spell | None = None
        self._before = (0, 0, 0)
        self.lines: list[MaskLine] = []

    def _line(self, spell: _Spell, elapsed_s: float, phase: str, failures: int, retries: int,
              callers_failed: int, budget: float | None, over: bool) -> MaskLine:
        line = MaskLine(elapsed_s, phase, self.upstream, self.replica,
                        max(0, failures - spell.replica_failures),
                        max(0, retries - spell.retries),
                        max(0, callers_failed - spell.callers_failed), budget, over)
        self.lines.append(line)
        return line

    def observe(self, elapsed_s: float, phase: str, replica_failures: int, retries: int,
                callers_failed: int, budget_available: float | None) -> list[MaskLine]:
        """The lines due at this frame (totals since the sidecar started, as polled). A spell
        counts from the last frame before it (the failures of its first moments included)."""
        spell = self._spell
        now = (replica_failures, retries, callers_failed, budget_available)
        before, self._before = self._before, (replica_failures, retries, callers_failed)
        if phase == self._sick_phase:
            if spell is None:
                self._spell = _Spell(elapsed_s, *before)
            elif not spell.reported and elapsed_s - spell.started_s >= self._report_after_s:
                spell.reported = True
                return [self._line(spell, elapsed_s, phase, *now, over=False)]
            return []
        if spell is None:
            return []
        self._spell = None
        return [self._line(spell, elapsed_s, phase, *now, over=True)]


# --- showing them ----------------------------------------------------------------------------

def resilience_status(rows: Sequence[ResilienceRow]) -> str:
    """``orders retries 3/s (budget 14 left) | catalog limit 6 (gradient2) in flight 5 shed
    310/s`` for PlainView's status line."""
    parts = []
    for row in rows:
        if row.retries is not None:
            parts.append(f"{row.upstream} retries {row.retries_per_s:.0f}/s "
                         f"(budget {row.budget_available:.0f} left)")
        if row.adaptive:
            parts.append(f"{row.upstream} limit {row.limit} ({row.algorithm}) in flight "
                         f"{row.in_flight} shed {row.shed_per_s:.0f}/s"
                         + (" SHEDDING" if row.shedding else ""))
    return " | ".join(parts)


def resilience_table(rows: Sequence[ResilienceRow]) -> Table:
    """The live view's table of retries and adaptive limits."""
    table = Table(expand=True, header_style="bold")
    for column in ("upstream", "retries/s", "retried", "budget left", "budget refused",
                   "limit", "in flight", "shed/s", "shed", "shedding"):
        table.add_column(column, justify="left" if column == "upstream" else "right")
    for row in rows:
        retried = row.retries is not None
        table.add_row(
            row.upstream,
            f"{row.retries_per_s:.1f}" if retried else "-",
            str(row.retries) if retried else "-",
            f"{row.budget_available:.0f}" if retried else "-",
            str(row.budget_exhausted) if retried else "-",
            f"{row.limit} ({row.algorithm})" if row.adaptive else "-",
            str(row.in_flight) if row.adaptive else "-",
            f"{row.shed_per_s:.0f}" if row.adaptive else "-",
            str(row.shed) if row.adaptive else "-",
            (Text("yes", style="bold red") if row.shedding else Text("no", style="green"))
            if row.adaptive else "-",
        )
    return table
