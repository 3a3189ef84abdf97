"""What ``sidecar demo`` shows: a live terminal view (rich) or plain lines.

On a terminal, :class:`LiveView` redraws a table of every breaker (state, call rates, window
rates, open duration, trip streak, events in the log) and one of the ``orders`` replicas
(state, calls/s and share, EWMA, ejections in a row; :mod:`sidecar.demo._endpoints_view`) a few
times a second, with the latest transitions, ejections and returns under them. Elsewhere (CI,
pipes, ``--plain``) :class:`PlainView` prints one line per phase change, per transition, per
ejection and per return, and a short status line every few seconds, so the output reads well
in a log. Both also show retries and adaptive limits (:mod:`sidecar.demo._resilience_view`)
and their notes: retries masking the sick replica, shedding started and stopped.

Views are called from the demo's event loop thread only; they never block on I/O other than
writing to the terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from sidecar.demo._endpoints_view import (
    EndpointLine,
    EndpointRow,
    endpoints_status,
    endpoints_table,
)
from sidecar.demo._load import TargetStats
from sidecar.demo._phases import LoadAt, PhaseAt
from sidecar.demo._resilience_view import (
    MaskLine,
    ResilienceRow,
    resilience_status,
    resilience_table,
)
from sidecar.demo._shedding_view import SheddingLine

STATUS_EVERY_S: Final = 5.0
"""PlainView prints a status line this often."""
RECENT_TRANSITIONS: Final = 10
"""Transitions, ejections and returns listed under the live tables."""
STATE_STYLES: Final = {"CLOSED": "bold green", "HALF_OPEN": "bold yellow", "OPEN": "bold red"}


@dataclass(frozen=True, slots=True)
class BreakerRow:
    """One breaker as the sidecar's admin API reports it."""

    name: str
    state: str  # CLOSED, OPEN, HALF_OPEN
    mode: str
    window_calls: int
    failure_rate: float
    slow_call_rate: float
    open_duration_s: float
    open_remaining_s: float | None
    trip_streak: int


@dataclass(frozen=True, slots=True)
class TransitionLine:
    """One BreakerTransitioned event, as read back from the event log."""

    elapsed_s: float
    phase: str
    upstream: str
    from_state: str
    to_state: str
    reason: str
    failure_rate: float
    slow_call_rate: float
    open_duration_s: float
    trip_streak: int
    position: int
    trace_id: str

    def text(self) -> str:
        opened = (f"  open {self.open_duration_s:.1f}s (streak {self.trip_streak})"
                  if self.to_state == "OPEN" else "")
        trace = f" trace {self.trace_id[:16]}" if self.trace_id else ""
        return (f"{self.elapsed_s:6.1f}s  [{self.phase:>8}]  {self.upstream:<10} "
                f"{self.from_state:>9} -> {self.to_state:<9} reason={self.reason:<22} "
                f"failure={self.failure_rate:.2f} slow={self.slow_call_rate:.2f}{opened}"
                f"  (log #{self.position}{trace})")

    def short(self) -> str:
        """A compact form for the live view's panel."""
        opened = f", open {self.open_duration_s:.1f}s" if self.to_state == "OPEN" else ""
        return (f"{self.elapsed_s:6.1f}s {self.phase:>8}  {self.upstream:<10} "
                f"{self.from_state:>9} -> {self.to_state:<9} {self.reason} "
                f"(failure {self.failure_rate:.2f}, slow {self.slow_call_rate:.2f}{opened})"
                f"  log #{self.position}")


Line = TransitionLine | EndpointLine | MaskLine | SheddingLine
"""Anything printed as a line of its own (each has ``text()`` and ``short()``)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """Everything the view shows at one moment."""

    elapsed_s: float
    duration_s: float | None
    phase: PhaseAt
    breakers: Sequence[BreakerRow]
    load: Mapping[str, TargetStats]
    events_by_upstream: Mapping[str, int]
    events_total: int
    recent: Sequence[Line] = field(default_factory=tuple)
    endpoints: Sequence[EndpointRow] = field(default_factory=tuple)
    """The ``orders`` replicas, from the admin API's ListEndpoints."""
    orders_phase: PhaseAt | None = None
    resilience: Sequence[ResilienceRow] = field(default_factory=tuple)
    """Upstreams that retry or have an adaptive limit, from the admin API's ListBreakers."""
    catalog_load: LoadAt | None = None


class View(Protocol):
    def phase(self, phase: PhaseAt, elapsed_s: float) -> None: ...
    def orders_phase(self, phase: PhaseAt, elapsed_s: float) -> None: ...
    def transition(self, line: TransitionLine) -> None: ...
    def endpoint(self, line: EndpointLine) -> None: ...
    def note(self, line: MaskLine | SheddingLine) -> None: ...
    def frame(self, frame: Frame) -> None: ...
    def close(self) -> None: ...


def _status(frame: Frame) -> str:
    parts = []
    for row in frame.breakers:
        stats = frame.load.get(row.name)
        rates = stats.rates_per_s if stats else {}
        parts.append(f"{row.name} {row.state.lower()} "
                     f"ok {rates.get('ok', 0.0):.0f}/s rejected {rates.get('rejected', 0.0):.0f}/s "
                     f"failed {rates.get('failed', 0.0):.0f}/s")
    endpoints = endpoints_status(frame.endpoints)
    if endpoints:
        parts.append(endpoints)
    resilience = resilience_status(frame.resilience)
    if resilience:
        parts.append(resilience)
    return (f"{frame.elapsed_s:6.1f}s  [{frame.phase.name:>8}]  " + " | ".join(parts)
            + f" | {frame.events_total} events in the log")


class PlainView:
    """Line by line, for logs and pipes."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self._out = out
        self._next_status_s = STATUS_EVERY_S

    def _print(self, text: str) -> None:
        print(text, file=self._out, flush=True)

    def phase(self, phase: PhaseAt, elapsed_s: float) -> None:
        self._print(f"{elapsed_s:6.1f}s  phase {phase.name}: payments "
                    f"{phase.behaviour.description} (for {phase.ends_s - phase.started_s:g}s)")

    def orders_phase(self, phase: PhaseAt, elapsed_s: float) -> None:
        self._print(f"{elapsed_s:6.1f}s  orders phase {phase.name}: "
                    f"{phase.behaviour.description} (for {phase.ends_s - phase.started_s:g}s)")

    def transition(self, line: TransitionLine) -> None:
        self._print(line.text())

    def endpoint(self, line: EndpointLine) -> None:
        self._print(line.text())

    def note(self, line: MaskLine | SheddingLine) -> None:
        self._print(line.text())

    def frame(self, frame: Frame) -> None:
        if frame.elapsed_s >= self._next_status_s:
            self._next_status_s = frame.elapsed_s + STATUS_EVERY_S
            self._print(_status(frame))

    def close(self) -> None:
        pass


def _rate(value: float) -> str:
    return f"{value:.1f}" if value else "-"


def render(frame: Frame) -> Group:
    """The live view's content for one frame."""
    remaining = ""
    if frame.duration_s is not None:
        remaining = f" of {frame.duration_s:g}s"
    next_in = frame.phase.ends_s - frame.elapsed_s
    header = Text.assemble(
        ("elapsed ", "dim"), f"{frame.elapsed_s:5.1f}s{remaining}   ",
        ("phase ", "dim"), (frame.phase.name, "bold"),
        f" - payments {frame.phase.behaviour.description}",
        (f"   (next phase in {next_in:.0f}s)", "dim"),
    )
    table = Table(expand=True, header_style="bold")
    for column, justify in (("breaker", "left"), ("state", "left"), ("ok/s", "right"),
                            ("failed/s", "right"), ("rejected/s", "right"),
                            ("overflow/s", "right"), ("window failure", "right"),
                            ("window slow", "right"), ("open duration", "right"),
                            ("streak", "right"), ("events in log", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in frame.breakers:
        stats = frame.load.get(row.name)
        rates = stats.rates_per_s if stats else {}
        if row.state == "OPEN" and row.open_remaining_s is not None:
            open_text = f"{row.open_duration_s:.1f}s ({row.open_remaining_s:.1f}s left)"
        else:
            open_text = f"next {row.open_duration_s:.1f}s"
        table.add_row(
            row.name, Text(row.state, style=STATE_STYLES.get(row.state, "")),
            _rate(rates.get("ok", 0.0)), _rate(rates.get("failed", 0.0)),
            _rate(rates.get("rejected", 0.0)), _rate(rates.get("overflow", 0.0)),
            f"{row.failure_rate:.0%}", f"{row.slow_call_rate:.0%}", open_text,
            str(row.trip_streak), str(frame.events_by_upstream.get(row.name, 0)),
        )
    recent = Text("\n".join(line.short() for line in frame.recent[-RECENT_TRANSITIONS:])
                  or "no transition yet", no_wrap=True, overflow="ellipsis")
    parts: list[Any] = [
        Panel(header, title="Evergreen Sidecar demo", subtitle="Ctrl-C stops everything"),
        table,
    ]
    if frame.endpoints:
        orders = frame.orders_phase
        title = (f"{frame.endpoints[0].upstream} replicas (p2c_ewma, outlier ejection)"
                 + (f" - phase {orders.name}: {orders.behaviour.description}" if orders else ""))
        parts.append(Panel(endpoints_table(frame.endpoints), title=title))
    if frame.resilience:
        load = frame.catalog_load
        title = ("retries (budget) and adaptive limits"
                 + (f" - catalog load {load.name}: {load.load.description}" if load else ""))
        parts.append(Panel(resilience_table(frame.resilience), title=title))
    parts.append(Panel(recent, title=f"latest transitions, ejections, returns and shedding, "
                                     f"read back from the event log ({frame.events_total} "
                                     f"events)"))
    return Group(*parts)


class LiveView:
    """A rich Live display redrawn on every frame."""

    def __init__(self, console: Console | None = None) -> None:
        self._console = console or Console()
        self._recent: list[Line] = []
        self._live = Live(console=self._console, refresh_per_second=4, transient=False)
        self._live.start()

    def phase(self, phase: PhaseAt, elapsed_s: float) -> None:
        pass  # shown in the header of every frame

    def orders_phase(self, phase: PhaseAt, elapsed_s: float) -> None:
        pass  # shown above the replicas' table

    def transition(self, line: TransitionLine) -> None:
        self._recent.append(line)
        del self._recent[:-RECENT_TRANSITIONS]

    def endpoint(self, line: EndpointLine) -> None:
        self._recent.append(line)
        del self._recent[:-RECENT_TRANSITIONS]

    def note(self, line: MaskLine | SheddingLine) -> None:
        self._recent.append(line)
        del self._recent[:-RECENT_TRANSITIONS]

    def frame(self, frame: Frame) -> None:
        self._live.update(render(replace(frame, recent=tuple(self._recent))))

    def close(self) -> None:
        self._live.stop()
