"""What ``sidecar demo`` prints before and after the live part: where everything listens, and
the summary of what happened (trips, ejections, retries, shedding).

Pure code: it only calls ``out`` with lines.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sidecar.demo._config import (
    INSTANCE,
    ORDERS_REPLICAS,
    SERVICE,
    SICK_REPLICA,
    Ports,
    replica_name,
)
from sidecar.demo._endpoints_view import EJECTED, RETURNED, EndpointWatch
from sidecar.demo._log import Tally, state_name
from sidecar.demo._processes import Child
from sidecar.demo._stories import Stories
from sidecar.demo._view import BreakerRow

if TYPE_CHECKING:
    from sidecar.demo._system import DemoOptions

__all__ = ["breaker_rows", "plural", "print_summary", "print_where"]

BREAKER_ORDER = {"payments": 0, "inventory": 1, "orders": 2, "catalog": 3}


def plural(count: int, noun: str) -> str:
    if count == 1:
        return f"1 {noun}"
    return f"{count} {noun[:-1] + 'ies' if noun.endswith('y') else noun + 's'}"


def _plan(schedule: tuple[tuple[str, float], ...]) -> str:
    return " -> ".join(f"{n} {s:g}s" for n, s in schedule)


def breaker_rows(response: Any, now_wall: float | None = None) -> list[BreakerRow]:
    """The rows of a ``ListBreakersResponse``, in the demo's order."""
    now = time.time() if now_wall is None else now_wall
    rows = []
    for info in response.breakers:
        remaining = None
        if info.HasField("open_until"):
            until = info.open_until.seconds + info.open_until.nanos / 1e9
            remaining = max(0.0, until - now)
        rows.append(BreakerRow(
            name=info.name, state=state_name(info.state), mode=str(info.mode),
            window_calls=info.window.calls, failure_rate=info.window.failure_rate,
            slow_call_rate=info.window.slow_call_rate,
            open_duration_s=info.open_duration_ms / 1000.0, open_remaining_s=remaining,
            trip_streak=info.trip_streak))
    return sorted(rows, key=lambda r: (BREAKER_ORDER.get(r.name, 9), r.name))


def print_where(out: Callable[[str], None], options: DemoOptions, data_dir: Path, ports: Ports,
                kept: bool, children: Mapping[str, Child]) -> None:
    keep = "kept" if kept else "removed at exit; --data DIR keeps it"
    out(f"Evergreen Sidecar demo: service {SERVICE!r}, instance {INSTANCE!r} "
        f"(data in {data_dir}, {keep})")
    out(f"  sample upstream  127.0.0.1:{ports.upstream}   payments: {_plan(options.schedule)} "
        f"(repeating); inventory: always healthy; catalog: capacity-bound, load "
        f"{_plan(options.catalog_schedule)} (repeating)   [pid {children['upstream'].pid}]")
    for index, port in enumerate(ports.orders):
        name = replica_name(index)
        plan = (f"{_plan(options.orders_schedule)} (repeating)" if index == SICK_REPLICA
                else "always healthy")
        out(f"  {name:<16} 127.0.0.1:{port}   orders replica {index + 1} of "
            f"{ORDERS_REPLICAS}: {plan}   [pid {children[name].pid}]")
    out(f"  sidecar          127.0.0.1:{ports.listen}   admin 127.0.0.1:{ports.admin}   "
        f"metrics http://127.0.0.1:{ports.metrics}/metrics   [pid {children['sidecar'].pid}]")
    out(f"  event log        127.0.0.1:{ports.eventlog}    metrics "
        f"http://127.0.0.1:{ports.eventlog_metrics}/metrics   store "
        f"sqlite:///{data_dir / 'events.db'}   [pid {children['eventlog'].pid}]")
    out(f"  logs             {data_dir / 'logs'}/")
    out("  while it runs, try:")
    out(f"    sidecar events query --eventlog 127.0.0.1:{ports.eventlog} "
        f"--service {SERVICE} --output table")
    out(f"    sidecar breakers --admin 127.0.0.1:{ports.admin}")
    out(f"    sidecar endpoints --admin 127.0.0.1:{ports.admin} --upstream orders")
    out(f"    prometheus --config.file={data_dir / 'prometheus.yml'} "
        "--enable-feature=exemplar-storage   (then import dashboards/*.json in Grafana)")
    duration = f"for {options.duration_s:g}s" if options.duration_s else "until Ctrl-C"
    out(f"running {duration} ...")


def print_summary(out: Callable[[str], None], load_totals: Mapping[str, Mapping[str, int]],
                  tally: Tally, watch: EndpointWatch | None, stories: Stories | None,
                  eventlog_address: str | None) -> None:
    for name, totals in load_totals.items():
        trips = sum(1 for t in tally.transitions if t.upstream == name and t.to_state == "OPEN")
        recoveries = sum(1 for t in tally.transitions
                         if t.upstream == name and t.from_state == "HALF_OPEN"
                         and t.to_state == "CLOSED")
        calls = ", ".join(f"{count} {outcome}" for outcome, count in totals.items() if count)
        out(f"  {name:<10} {plural(trips, 'trip')}, {plural(recoveries, 'recovery')}; "
            f"calls: {calls or 'none'}")
    if watch is not None:
        ejected, returned = watch.counts(EJECTED), watch.counts(RETURNED)
        for replica in sorted(set(ejected) | set(returned)):
            out(f"  {replica:<10} {plural(ejected.get(replica, 0), 'ejection')}, "
                f"{plural(returned.get(replica, 0), 'return')} (orders outlier detection)")
    if stories is not None:
        for line in stories.summary(load_totals):
            out(line)
    if eventlog_address:
        out(f"  {tally.events_total} events of {SERVICE!r} read back from the event log")
