"""``sidecar demo``: the whole system on one machine, with no other setup.

Starts, each in its own process group:

1. three ``orders`` replicas (``python -m sidecar.demo.upstream --serve orders``), one of
   which sickens for a while (healthy, sick, healed) while the others stay healthy;
2. a sample upstream (``python -m sidecar.demo.upstream``) whose ``payments`` service goes
   through phases (healthy, brownout, outage, recovery, repeating) while ``inventory`` stays
   healthy;
3. the event log (``sidecar eventlog serve``) on the embedded SQLite store in a temporary
   folder (``--data DIR`` keeps it);
4. the sidecar (``sidecar proxy``) in front of them all (``orders`` balanced over its three
   endpoints, a sick one ejected), shipping its events to the log;

then drives a load generator through the sidecar (the "host app") and shows every breaker's
state, call rates, window rates, open duration, the ``orders`` replicas (admin
``ListEndpoints``) and the events read back from the log. It prints
where the ``/metrics`` endpoints and the event log listen, and writes a ``prometheus.yml`` for
them. ``--duration`` bounds the run; Ctrl-C (or SIGTERM) stops every process it started.

Ports: the defaults of ``deploy/prometheus.yml`` (sidecar metrics 9464, event log metrics
9465, event log 7070, ...) when free, any free port otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from sidecar.demo._config import (
    INSTANCE,
    ORDERS_OUTLIER,
    ORDERS_REPLICAS,
    SERVICE,
    SICK_REPLICA,
    Ports,
    prometheus_config,
    replica_name,
    sidecar_config,
)
from sidecar.demo._endpoints_view import EJECTED, RETURNED, EndpointRow, EndpointWatch
from sidecar.demo._load import LoadGenerator, Target
from sidecar.demo._log import LogFollower, Tally, drain, state_name
from sidecar.demo._phases import (
    DEFAULT_REPLICA_SCHEDULE,
    DEFAULT_SCHEDULE,
    REPLICA_BEHAVIOURS,
    PhaseAt,
    format_schedule,
    phase_at,
)
from sidecar.demo._processes import Child, ChildError, Children
from sidecar.demo._view import BreakerRow, Frame, View
from sidecar.demo.upstream import INVENTORY_METHOD, ORDERS_METHOD, PAYMENTS_METHOD

__all__ = ["INSTANCE", "SERVICE", "DemoOptions", "Ports", "prometheus_config", "run_demo",
           "sidecar_config"]

DEFAULT_PAYMENTS_CALLS_PER_S: Final = 25.0
DEFAULT_INVENTORY_CALLS_PER_S: Final = 10.0
DEFAULT_ORDERS_CALLS_PER_S: Final = 30.0
FRAME_INTERVAL_S: Final = 0.25
"""How often the view is refreshed and the admin API polled."""
ADMIN_TIMEOUT_S: Final = 1.0
CHILD_STOP_GRACE_S: Final = 8.0
ALWAYS_HEALTHY: Final = "healthy=3600"
"""The schedule of the orders replicas that never sicken."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    duration_s: float | None = None
    data_dir: Path | None = None
    schedule: tuple[tuple[str, float], ...] = DEFAULT_SCHEDULE
    orders_schedule: tuple[tuple[str, float], ...] = DEFAULT_REPLICA_SCHEDULE
    """The sick orders replica's phases."""
    payments_calls_per_s: float = DEFAULT_PAYMENTS_CALLS_PER_S
    inventory_calls_per_s: float = DEFAULT_INVENTORY_CALLS_PER_S
    orders_calls_per_s: float = DEFAULT_ORDERS_CALLS_PER_S


def _plural(count: int, noun: str) -> str:
    if count == 1:
        return f"1 {noun}"
    return f"{count} {noun[:-1] + 'ies' if noun.endswith('y') else noun + 's'}"


def _ejection_s(in_a_row: int) -> float:
    """The ejection time the demo's outlier_detection gives the n-th ejection in a row."""
    base_ms, max_ms = ORDERS_OUTLIER["base_ejection_ms"], ORDERS_OUTLIER["max_ejection_ms"]
    return float(min(base_ms * in_a_row, max_ms)) / 1000.0


class Demo:
    """One run of the demo. ``run()`` blocks until the duration ends or a signal arrives."""

    def __init__(self, options: DemoOptions, view_factory: Callable[[], View],
                 out: Callable[[str], None]) -> None:
        self.options = options
        self._view_factory = view_factory
        self._out = out
        self.children = Children()
        self.tally = Tally()
        self._started_at_wall = 0.0
        self._started_at = 0.0
        self._launched_at_wall = 0.0
        self.load_totals: dict[str, dict[str, int]] = {}
        self.watch: EndpointWatch | None = None

    # --- processes ---------------------------------------------------------------------------

    def _start_processes(self, data_dir: Path, ports: Ports) -> dict[str, Child]:
        python, sidecar_bin = sys.executable, str(Path(sys.executable).with_name("sidecar"))
        if not Path(sidecar_bin).exists():
            sidecar_bin = ""
        sidecar_cmd = [sidecar_bin] if sidecar_bin else [python, "-m", "sidecar.cli"]
        logs = data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        config_path = data_dir / "sidecar.yaml"
        config_path.write_text(yaml.safe_dump(sidecar_config(ports, data_dir), sort_keys=False))
        (data_dir / "prometheus.yml").write_text(
            yaml.safe_dump(prometheus_config(ports), sort_keys=False))

        replicas = {}
        for index, port in enumerate(ports.orders):
            name = replica_name(index)
            schedule = (format_schedule(self.options.orders_schedule) if index == SICK_REPLICA
                        else ALWAYS_HEALTHY)
            replicas[name] = self.children.start(
                name, [python, "-m", "sidecar.demo.upstream", "--serve", "orders",
                       "--listen", f"127.0.0.1:{port}", "--phases", schedule],
                logs / f"{name}.log")
        upstream = self.children.start(
            "sample upstream",
            [python, "-m", "sidecar.demo.upstream", "--listen", f"127.0.0.1:{ports.upstream}",
             "--phases", format_schedule(self.options.schedule)],
            logs / "upstream.log")
        eventlog = self.children.start(
            "event log",
            [*sidecar_cmd, "eventlog", "serve",
             "--store", f"sqlite:///{data_dir / 'events.db'}",
             "--listen", f"127.0.0.1:{ports.eventlog}",
             "--metrics-listen", f"127.0.0.1:{ports.eventlog_metrics}"],
            logs / "eventlog.log")
        for child, port in zip(replicas.values(), ports.orders, strict=True):
            child.wait_for_port(port)
        upstream.wait_for_port(ports.upstream)
        eventlog.wait_for_port(ports.eventlog)
        eventlog.wait_for_port(ports.eventlog_metrics)
        sidecar = self.children.start(
            "sidecar", [*sidecar_cmd, "proxy", "--config", str(config_path)],
            logs / "sidecar.log")
        for port in (ports.listen, ports.admin, ports.metrics):
            sidecar.wait_for_port(port)
        return {**replicas, "upstream": upstream, "eventlog": eventlog, "sidecar": sidecar}

    def _print_where(self, data_dir: Path, ports: Ports, kept: bool,
                     children: dict[str, Child]) -> None:
        out = self._out
        schedule = " -> ".join(f"{n} {s:g}s" for n, s in self.options.schedule)
        sick = " -> ".join(f"{n} {s:g}s" for n, s in self.options.orders_schedule)
        keep = "kept" if kept else "removed at exit; --data DIR keeps it"
        out(f"Evergreen Sidecar demo: service {SERVICE!r}, instance {INSTANCE!r} "
            f"(data in {data_dir}, {keep})")
        out(f"  sample upstream  127.0.0.1:{ports.upstream}   payments: {schedule} (repeating);"
            f" inventory: always healthy   [pid {children['upstream'].pid}]")
        for index, port in enumerate(ports.orders):
            name = replica_name(index)
            plan = f"{sick} (repeating)" if index == SICK_REPLICA else "always healthy"
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
        duration = (f"for {self.options.duration_s:g}s" if self.options.duration_s
                    else "until Ctrl-C")
        out(f"running {duration} ...")

    # --- the live part -------------------------------------------------------------------------

    def _phase(self, elapsed_s: float) -> PhaseAt:
        return phase_at(self.options.schedule, elapsed_s)

    def _orders_phase(self, elapsed_s: float) -> PhaseAt:
        return phase_at(self.options.orders_schedule, elapsed_s, REPLICA_BEHAVIOURS)

    async def _breakers(self, stub: Any) -> list[BreakerRow]:
        from sidecar.v1 import admin_pb2

        reply = await stub.ListBreakers(admin_pb2.ListBreakersRequest(), timeout=ADMIN_TIMEOUT_S)
        now = time.time()
        rows = []
        for info in reply.breakers:
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
        order = {"payments": 0, "inventory": 1, "orders": 2}
        return sorted(rows, key=lambda r: (order.get(r.name, 3), r.name))

    async def _endpoints(self, stub: Any, watch: EndpointWatch,
                         elapsed: float) -> list[EndpointRow]:
        from sidecar.v1 import admin_pb2

        reply = await stub.ListEndpoints(admin_pb2.ListEndpointsRequest(upstream="orders"),
                                         timeout=ADMIN_TIMEOUT_S)
        return watch.observe(reply, elapsed)

    async def _live(self, ports: Ports, upstream_pids: list[int], view: View) -> str:
        """Run until the duration ends, a signal arrives or a child dies; return why."""
        import os

        import grpc

        from sidecar.v1 import admin_pb2_grpc

        stop = asyncio.Event()
        reason = ["duration reached"]
        loop = asyncio.get_running_loop()

        def on_signal(name: str) -> None:
            reason[0] = f"{name} received"
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig.name)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ports.listen}") as channel, \
                grpc.aio.insecure_channel(f"127.0.0.1:{ports.admin}") as admin_channel:
            admin = admin_pb2_grpc.SidecarAdminStub(admin_channel)  # type: ignore[no-untyped-call]
            load = LoadGenerator(channel, [
                Target("payments", PAYMENTS_METHOD, self.options.payments_calls_per_s),
                Target("inventory", INVENTORY_METHOD, self.options.inventory_calls_per_s),
                Target("orders", ORDERS_METHOD, self.options.orders_calls_per_s),
            ])
            self._started_at = time.monotonic()
            self._started_at_wall = time.time()
            for pid in upstream_pids:  # the upstreams' phase clocks start now
                os.kill(pid, signal.SIGUSR1)
            names = {address: replica_name(i)
                     for i, address in enumerate(ports.orders_endpoints())}
            watch = self.watch = EndpointWatch(
                "orders", names, lambda e: self._orders_phase(e).name, _ejection_s,
                self._started_at_wall, not_before_wall=self._launched_at_wall)
            follower = LogFollower(f"127.0.0.1:{ports.eventlog}", SERVICE, view, watch,
                                   lambda e: self._phase(e).name, self._started_at_wall,
                                   self.tally)
            load_task = asyncio.create_task(load.run(stop))
            follow_task = asyncio.create_task(follower.follow(stop))
            phase_names = ["", ""]
            rows: list[BreakerRow] = []
            endpoints: list[EndpointRow] = []
            try:
                while not stop.is_set():
                    elapsed = time.monotonic() - self._started_at
                    if self.options.duration_s is not None and elapsed >= self.options.duration_s:
                        break
                    dead = self.children.dead()
                    if dead:
                        reason[0] = (f"{dead[0].name} exited unexpectedly "
                                     f"(status {dead[0].popen.returncode}):\n"
                                     f"{dead[0].log_tail()}")
                        break
                    phase, orders_phase = self._phase(elapsed), self._orders_phase(elapsed)
                    if phase.name != phase_names[0] or elapsed < phase.started_s:
                        phase_names[0] = phase.name
                        view.phase(phase, elapsed)
                    if orders_phase.name != phase_names[1]:
                        phase_names[1] = orders_phase.name
                        view.orders_phase(orders_phase, elapsed)
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        rows = await self._breakers(admin)
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        endpoints = await self._endpoints(admin, watch, elapsed)
                    for line in watch.due(elapsed):
                        view.endpoint(line)
                    view.frame(Frame(
                        elapsed_s=elapsed, duration_s=self.options.duration_s, phase=phase,
                        breakers=rows, load=load.snapshot(),
                        events_by_upstream=dict(self.tally.events_by_upstream),
                        events_total=self.tally.events_total, endpoints=endpoints,
                        orders_phase=orders_phase))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), FRAME_INTERVAL_S)
            finally:
                stop.set()
                await asyncio.gather(load_task, return_exceptions=True)
                await drain(follow_task)
                for line in watch.flush():
                    view.endpoint(line)
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
            self.load_totals = {name: dict(stats.totals)
                                for name, stats in load.snapshot().items()}
        return reason[0]

    # --- summary --------------------------------------------------------------------------------

    def _summary(self, eventlog_address: str | None) -> None:
        out = self._out
        for name, totals in self.load_totals.items():
            trips = sum(1 for t in self.tally.transitions
                        if t.upstream == name and t.to_state == "OPEN")
            recoveries = sum(1 for t in self.tally.transitions
                             if t.upstream == name and t.from_state == "HALF_OPEN"
                             and t.to_state == "CLOSED")
            calls = ", ".join(f"{count} {outcome}" for outcome, count in totals.items() if count)
            out(f"  {name:<10} {_plural(trips, 'trip')}, {_plural(recoveries, 'recovery')}; "
                f"calls: {calls or 'none'}")
        if self.watch is not None:
            ejected, returned = self.watch.counts(EJECTED), self.watch.counts(RETURNED)
            for replica in sorted(set(ejected) | set(returned)):
                out(f"  {replica:<10} {_plural(ejected.get(replica, 0), 'ejection')}, "
                    f"{_plural(returned.get(replica, 0), 'return')} (orders outlier detection)")
        if eventlog_address:
            out(f"  {self.tally.events_total} events of {SERVICE!r} read back from the event log")

    # --- entry point ----------------------------------------------------------------------------

    def run(self) -> int:
        with _data_dir(self.options.data_dir) as (data_dir, kept):
            ports = Ports.pick()
            try:
                try:
                    self._launched_at_wall = time.time()
                    children = self._start_processes(data_dir, ports)
                except (ChildError, OSError) as exc:
                    self._out(f"sidecar demo: could not start: {exc}")
                    return 1
                self._print_where(data_dir, ports, kept, children)
                view = self._view_factory()
                upstream_pids = [children["upstream"].pid,
                                 *(children[replica_name(i)].pid for i in range(len(ports.orders)))]
                try:
                    reason = asyncio.run(self._live(ports, upstream_pids, view))
                finally:
                    view.close()
                self._out(f"stopping ({reason}) ...")
                failed = "exited unexpectedly" in reason
            finally:
                statuses = self.children.stop_all(CHILD_STOP_GRACE_S)
            self._out("stopped: " + ", ".join(
                f"{name} ({'exit ' + str(code) if code is not None else 'killed'})"
                for name, code in statuses.items()))
            self._summary(f"127.0.0.1:{ports.eventlog}")
            if kept:
                self._out(f"data kept in {data_dir}: sidecar events query needs the event log "
                          f"running: sidecar eventlog serve --store sqlite:///"
                          f"{data_dir / 'events.db'} --listen 127.0.0.1:{ports.eventlog}")
            return 1 if failed else 0


@contextlib.contextmanager
def _data_dir(path: Path | None) -> Iterator[tuple[Path, bool]]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path.resolve(), True
        return
    with tempfile.TemporaryDirectory(prefix="sidecar-demo-") as tmp:
        yield Path(tmp), False


def run_demo(options: DemoOptions, view_factory: Callable[[], View],
             out: Callable[[str], None] | None = None) -> int:
    """Run the demo; return the exit status (0, or 1 when a process failed)."""

    def default_out(text: str) -> None:
        print(text, flush=True)

    return Demo(options, view_factory, out or default_out).run()

