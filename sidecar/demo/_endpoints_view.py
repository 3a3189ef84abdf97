"""The ``orders`` replicas as ``sidecar demo`` shows them: each endpoint's state, and one line
per ejection and per return.

Two sources, the event log preferred:

- the event log's ``EndpointEjected`` / ``EndpointReturned`` events (the demo's point is that
  what happened is read back from the log): :meth:`EndpointWatch.from_log` makes the line;
- the sidecar's admin ``ListEndpoints``, polled with every frame: the table's rows (state,
  calls/s and share, EWMA, ejections in a row, time until back) and, from the difference
  between two polls, the same changes. A change seen there waits ``hold_s`` for its event
  from the log; only when none comes (a sidecar that does not ship endpoint events) is it
  printed from the admin API, marked so.

So each ejection and each return is printed once, from the log whenever the log has it.

Pure code on injected clocks, called from the demo's event loop only.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from rich.table import Table
from rich.text import Text

__all__ = ["EndpointLine", "EndpointRow", "EndpointWatch", "endpoints_status",
           "endpoints_table"]

LOG_WAIT_S: Final = 2.5
"""How long a change seen in the admin API waits for its event from the log, once the log
has shown it carries this upstream's endpoint events (``EndpointsChanged`` at start, ...)."""
NO_LOG_WAIT_S: Final = 0.5
"""The wait while the log has shown no endpoint event (a sidecar that does not ship them):
short, so the lines stay about in time order with the others."""
RATE_WINDOW_S: Final = 2.0
EJECTED: Final = "ejected"
ACTIVE: Final = "active"
RETURNED: Final = "returned"
_ADMIN_STATES: Final = {1: ACTIVE, 2: EJECTED}  # admin_pb2.EndpointState


@dataclass(frozen=True, slots=True)
class EndpointRow:
    """One endpoint as the sidecar's admin API reports it, with rates from successive polls."""

    upstream: str
    address: str
    name: str
    state: str  # active | ejected
    calls_per_s: float
    share: float
    """Of the upstream's calls per second, this endpoint's part (0..1)."""
    failures_per_s: float
    ewma_ms: float
    in_flight: int
    ejections_in_a_row: int
    back_in_s: float | None
    """Seconds until an ejected endpoint takes calls again (None when active)."""


@dataclass(frozen=True, slots=True)
class EndpointLine:
    """One ejection or return, from the event log (``position`` > 0) or the admin API."""

    kind: str  # ejected | returned
    elapsed_s: float
    phase: str
    upstream: str
    endpoint: str
    name: str
    reason: str = ""
    out_s: float = 0.0
    """Ejected: how long it stays out. Returned: how long it was out."""
    ejections_in_a_row: int = 0
    consecutive_failures: int = 0
    failure_rate: float = 0.0
    calls: int = 0
    position: int = 0
    trace_id: str = ""

    def _where(self) -> str:
        if not self.position:
            return "(seen in the admin API)"
        trace = f" trace {self.trace_id[:16]}" if self.trace_id else ""
        return f"(log #{self.position}{trace})"

    def _change(self) -> str:
        return "active -> ejected" if self.kind == EJECTED else "ejected -> active"

    def text(self) -> str:
        who = f"{self.name} {self.endpoint}" if self.name != self.endpoint else self.endpoint
        head = (f"{self.elapsed_s:6.1f}s  [{self.phase:>8}]  {self.upstream:<10} {who:<25} "
                f"{self._change()}")
        if self.kind == RETURNED:
            return f"{head}  after {self.out_s:.1f}s out  {self._where()}"
        reason = (f"  reason={self.reason:<20} failed {self.consecutive_failures} in a row, "
                  f"failure={self.failure_rate:.2f} of {self.calls} calls") if self.reason else ""
        return (f"{head}{reason}  out {self.out_s:.1f}s ({self.ejections_in_a_row} in a row)"
                f"  {self._where()}")

    def short(self) -> str:
        """A compact form for the live view's panel."""
        where = f"  log #{self.position}" if self.position else "  (admin API)"
        detail = (f"back after {self.out_s:.1f}s" if self.kind == RETURNED else
                  f"{self.reason or 'ejected'}, out {self.out_s:.1f}s "
                  f"({self.ejections_in_a_row} in a row)")
        return (f"{self.elapsed_s:6.1f}s {self.phase:>8}  {self.upstream:<10} {self.name:>9} "
                f"{self._change()} {detail}{where}")


def _reason(value: int) -> str:
    from sidecar.v1 import events_pb2

    try:
        name = str(events_pb2.EjectionReason.Name(value))
    except ValueError:
        return f"unknown({value})"
    return name.removeprefix("EJECTION_REASON_").lower()


@dataclass
class _Seen:
    state: str
    until_wall: float | None
    in_a_row: int
    samples: deque[tuple[float, int, int]]


class EndpointWatch:
    """Turns admin polls and log events about ``upstream``'s endpoints into rows and lines.

    ``names`` maps an address to the demo's name for it (``orders-2``); ``phase_of`` gives
    the phase name to print for an elapsed time; ``ejection_s_of(in_a_row)`` the ejection
    time the config gives (the admin API shows only when an ejection ends). Log events from
    before ``not_before_wall`` (default: ``started_at_wall``) belong to an earlier run (a kept
    ``--data`` folder) and are ignored.

    Example::

        watch = EndpointWatch("orders", names, phase_of, ejection_s_of, started_at_wall)
        rows = watch.observe(list_endpoints_response, elapsed_s)
        for line in watch.due(elapsed_s):
            view.endpoint(line)
    """

    def __init__(self, upstream: str, names: Mapping[str, str],
                 phase_of: Callable[[float], str], ejection_s_of: Callable[[int], float],
                 started_at_wall: float, *, hold_s: float = LOG_WAIT_S,
                 no_log_hold_s: float = NO_LOG_WAIT_S, not_before_wall: float | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        self.upstream = upstream
        self._names = dict(names)
        self._phase_of = phase_of
        self._ejection_s_of = ejection_s_of
        self.started_at_wall = started_at_wall
        self._not_before_wall = started_at_wall if not_before_wall is None else not_before_wall
        self._hold_s = hold_s
        self._no_log_hold_s = no_log_hold_s
        self.log_has_endpoint_events = False
        """Whether the log delivered any endpoint event of this upstream in this run."""
        self._wall = wall
        self._seen: dict[str, _Seen] = {}
        self._log_counts: dict[tuple[str, str], int] = {}
        self._admin_counts: dict[tuple[str, str], int] = {}
        self._pending: dict[tuple[str, str, int], tuple[EndpointLine, float]] = {}
        self.lines: list[EndpointLine] = []
        """Every line handed out (the summary counts them)."""

    def _name(self, address: str) -> str:
        return self._names.get(address, address)

    def _elapsed(self, wall_s: float) -> float:
        return max(0.0, wall_s - self.started_at_wall)

    def _out(self, line: EndpointLine) -> EndpointLine:
        self.lines.append(line)
        return line

    # --- the event log ----------------------------------------------------------------------

    def from_log(self, event: Any) -> EndpointLine | None:
        """The line for an ``EndpointEjected`` / ``EndpointReturned`` event of this upstream
        (None for any other event, or one from before this run)."""
        which = event.WhichOneof("payload")
        if which not in ("endpoint_ejected", "endpoint_returned", "endpoints_changed"):
            return None
        payload = getattr(event, which)
        occurred = event.occurred_at.seconds + event.occurred_at.nanos / 1e9
        if payload.upstream != self.upstream or occurred < self._not_before_wall:
            return None
        self.log_has_endpoint_events = True
        if which == "endpoints_changed":
            return None
        elapsed = self._elapsed(occurred)
        common = dict(elapsed_s=elapsed, phase=self._phase_of(elapsed), upstream=self.upstream,
                      endpoint=payload.endpoint, name=self._name(payload.endpoint),
                      position=event.global_position, trace_id=event.trace_id)
        if which == "endpoint_ejected":
            line = EndpointLine(
                kind=EJECTED, reason=_reason(payload.reason),
                out_s=payload.ejection_ms / 1000.0,
                ejections_in_a_row=payload.ejections_in_a_row,
                consecutive_failures=payload.consecutive_failures,
                failure_rate=payload.failure_rate, calls=payload.calls, **common)
        else:
            line = EndpointLine(kind=RETURNED, out_s=payload.ejected_for_ms / 1000.0, **common)
        key = (line.kind, line.endpoint)
        count = self._log_counts[key] = self._log_counts.get(key, 0) + 1
        if self._pending.pop((*key, count), None) is None and (
                self._admin_counts.get(key, 0) >= count):
            return None  # already printed from the admin API (the log was late): once only
        return self._out(line)

    # --- the admin API ----------------------------------------------------------------------

    def _admin_change(self, kind: str, address: str, elapsed: float, in_a_row: int,
                      out_s: float) -> None:
        key = (kind, address)
        count = self._admin_counts[key] = self._admin_counts.get(key, 0) + 1
        if self._log_counts.get(key, 0) >= count:
            return  # the log already told
        line = EndpointLine(kind=kind, elapsed_s=elapsed, phase=self._phase_of(elapsed),
                            upstream=self.upstream, endpoint=address, name=self._name(address),
                            out_s=out_s, ejections_in_a_row=in_a_row)
        self._pending[(*key, count)] = (line, elapsed)

    def observe(self, response: Any, elapsed_s: float,
                monotonic_s: float | None = None) -> list[EndpointRow]:
        """The rows for a ``ListEndpointsResponse``; changes since the last poll are queued
        as lines (see :meth:`due`)."""
        now_wall = self._wall()
        now = time.monotonic() if monotonic_s is None else monotonic_s
        infos = [info for upstream in response.upstreams if upstream.upstream == self.upstream
                 for info in upstream.endpoints]
        rates: dict[str, tuple[float, float]] = {}
        for info in infos:
            state = _ADMIN_STATES.get(info.state, "unknown")
            until = (info.ejected_until.seconds + info.ejected_until.nanos / 1e9
                     if info.HasField("ejected_until") else None)
            seen = self._seen.get(info.address)
            if seen is None:
                seen = self._seen[info.address] = _Seen(ACTIVE, None, 0, deque())
            self._diff(info.address, seen, state, until, info.ejections_in_a_row, elapsed_s)
            seen.state, seen.until_wall, seen.in_a_row = state, until, info.ejections_in_a_row
            seen.samples.append((now, info.calls, info.failures))
            while len(seen.samples) > 2 and seen.samples[1][0] <= now - RATE_WINDOW_S:
                seen.samples.popleft()
            first_at, first_calls, first_failures = seen.samples[0]
            span = now - first_at
            rates[info.address] = ((info.calls - first_calls) / span if span > 0 else 0.0,
                                   (info.failures - first_failures) / span if span > 0 else 0.0)
        total = sum(calls for calls, _ in rates.values())
        rows = []
        for info in infos:
            calls_per_s, failures_per_s = rates[info.address]
            seen = self._seen[info.address]
            rows.append(EndpointRow(
                upstream=self.upstream, address=info.address, name=self._name(info.address),
                state=seen.state, calls_per_s=calls_per_s,
                share=calls_per_s / total if total > 0 else 0.0, failures_per_s=failures_per_s,
                ewma_ms=info.ewma_ms, in_flight=info.in_flight,
                ejections_in_a_row=info.ejections_in_a_row,
                back_in_s=(None if seen.until_wall is None
                           else max(0.0, seen.until_wall - now_wall))))
        return sorted(rows, key=lambda r: r.name)

    def _diff(self, address: str, seen: _Seen, state: str, until: float | None,
              in_a_row: int, elapsed: float) -> None:
        """Queue the changes between the last poll and this one. An endpoint ejected in both
        polls came back and was ejected again in between when its ejections in a row grew
        (ejections in a row never decay while ejected)."""
        was_ejected = seen.state == EJECTED
        if was_ejected and (state != EJECTED or in_a_row > seen.in_a_row):
            back_at = self._elapsed(seen.until_wall) if seen.until_wall else elapsed
            out_s = self._ejection_s_of(max(1, seen.in_a_row))  # the ejection that ended
            self._admin_change(RETURNED, address, min(back_at, elapsed), 0, out_s)
            was_ejected = False
        if state == EJECTED and not was_ejected:
            self._admin_change(EJECTED, address, elapsed, in_a_row,
                               self._ejection_s_of(max(1, in_a_row)))

    def due(self, elapsed_s: float) -> list[EndpointLine]:
        """Changes seen in the admin API whose event did not come from the log in time."""
        hold_s = self._hold_s if self.log_has_endpoint_events else self._no_log_hold_s
        ready = [key for key, (_, queued) in self._pending.items()
                 if elapsed_s - queued >= hold_s]
        return [self._out(self._pending.pop(key)[0]) for key in sorted(
            ready, key=lambda k: self._pending[k][0].elapsed_s)]

    def flush(self) -> list[EndpointLine]:
        """Everything still waiting (the demo is stopping)."""
        return self.due(float("inf"))

    def counts(self, kind: str) -> dict[str, int]:
        """How many ``kind`` lines were handed out, per endpoint name."""
        counts: dict[str, int] = {}
        for line in self.lines:
            if line.kind == kind:
                counts[line.name] = counts.get(line.name, 0) + 1
        return counts


# --- showing them ----------------------------------------------------------------------------

STATE_STYLES: Final = {ACTIVE: "bold green", EJECTED: "bold red"}


def endpoints_status(rows: Sequence[EndpointRow]) -> str:
    """``orders 2/3 active (orders-2 ejected, back in 3.1s)`` for PlainView's status line."""
    if not rows:
        return ""
    active = sum(1 for r in rows if r.state == ACTIVE)
    out = [f"{r.name} ejected, back in {r.back_in_s or 0.0:.1f}s"
           for r in rows if r.state == EJECTED]
    shares = " ".join(f"{r.name} {r.share:.0%}" for r in rows)
    return (f"{rows[0].upstream} {active}/{len(rows)} active"
            + (f" ({', '.join(out)})" if out else "") + f" calls {shares}")


def endpoints_table(rows: Sequence[EndpointRow]) -> Table:
    """The live view's table of one upstream's endpoints."""
    table = Table(expand=True, header_style="bold")
    for column, justify in (("replica", "left"), ("endpoint", "left"), ("state", "left"),
                            ("calls/s", "right"), ("share", "right"), ("failed/s", "right"),
                            ("EWMA ms", "right"), ("in flight", "right"),
                            ("ejections in a row", "right"), ("back in", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(
            row.name, row.address, Text(row.state, style=STATE_STYLES.get(row.state, "")),
            f"{row.calls_per_s:.1f}", f"{row.share:.0%}",
            f"{row.failures_per_s:.1f}" if row.failures_per_s else "-",
            f"{row.ewma_ms:.1f}", str(row.in_flight), str(row.ejections_in_a_row),
            "-" if row.back_in_s is None else f"{row.back_in_s:.1f}s",
        )
    return table
