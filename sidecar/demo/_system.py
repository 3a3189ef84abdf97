"""``sidecar demo``: the whole system on one machine, with no other setup.

Starts, each in its own process group:

1. three ``orders`` replicas (``python -m sidecar.demo.upstream --serve orders``), one of
   which sickens for a while (healthy, sick, healed) while the others stay healthy;
2. a sample upstream (``python -m sidecar.demo.upstream``) whose ``payments`` service goes
   through phases (healthy, brownout, outage, recovery, repeating) while ``inventory`` stays
   healthy and ``catalog`` serves a few calls at once (its load surges to 3x that);
3. the event log (``sidecar eventlog serve``) on the embedded SQLite store in a temporary
   folder (``--data DIR`` keeps it);
4. the sidecar (``sidecar proxy``) in front of them all (``orders`` balanced over its three
   endpoints, a sick one ejected and its failures retried elsewhere; ``catalog`` behind an
   adaptive concurrency limit), shipping its events to the log;

then drives a load generator through the sidecar (the "host app") and shows every breaker's
state, call rates, window rates, open duration, the ``orders`` replicas (admin
``ListEndpoints``), retries and budget, the adaptive limit and what it sheds
(:mod:`sidecar.demo._stories`), and the events read back from the log. It prints
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
    SERVICE,
    SICK_REPLICA,
    Ports,
    prometheus_config,
    replica_name,
    sidecar_config,
)
from sidecar.demo._endpoints_view import EndpointRow, EndpointWatch
from sidecar.demo._load import LoadGenerator, Target
from sidecar.demo._log import LogFollower, Tally, drain
from sidecar.demo._phases import (
    DEFAULT_CATALOG_SCHEDULE,
    DEFAULT_REPLICA_SCHEDULE,
    DEFAULT_SCHEDULE,
    REPLICA_BEHAVIOURS,
    LoadAt,
    PhaseAt,
    format_schedule,
    load_at,
    phase_at,
)
from sidecar.demo._processes import Child, ChildError, Children
from sidecar.demo._report import breaker_rows, print_summary, print_where
from sidecar.demo._stories import Stories
from sidecar.demo._view import BreakerRow, Frame, View
from sidecar.demo.upstream import (
    CATALOG_METHOD,
    INVENTORY_METHOD,
    ORDERS_METHOD,
    PAYMENTS_METHOD,
)

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
    catalog_schedule: tuple[tuple[str, float], ...] = DEFAULT_CATALOG_SCHEDULE
    """catalog's load phases (normal, surge): the rate the host app calls it at."""


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
        self.stories: Stories | None = None

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

    # --- the live part -------------------------------------------------------------------------

    def _phase(self, elapsed_s: float) -> PhaseAt:
        return phase_at(self.options.schedule, elapsed_s)

    def _orders_phase(self, elapsed_s: float) -> PhaseAt:
        return phase_at(self.options.orders_schedule, elapsed_s, REPLICA_BEHAVIOURS)

    def _catalog_load(self, elapsed_s: float) -> LoadAt:
        return load_at(self.options.catalog_schedule, elapsed_s)

    async def _breakers(self, stub: Any, stories: Stories) -> list[BreakerRow]:
        from sidecar.v1 import admin_pb2

        reply = await stub.ListBreakers(admin_pb2.ListBreakersRequest(), timeout=ADMIN_TIMEOUT_S)
        stories.breakers(reply, time.monotonic())
        return breaker_rows(reply)

    async def _endpoints(self, stub: Any, watch: EndpointWatch, stories: Stories,
                         elapsed: float) -> list[EndpointRow]:
        from sidecar.v1 import admin_pb2

        reply = await stub.ListEndpoints(admin_pb2.ListEndpointsRequest(upstream="orders"),
                                         timeout=ADMIN_TIMEOUT_S)
        stories.endpoints(reply)
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
                Target("catalog", CATALOG_METHOD, self._catalog_load(0.0).load.calls_per_s,
                       rate_of=lambda e: self._catalog_load(e).load.calls_per_s),
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
            stories = self.stories = Stories(
                ports.orders_endpoints()[SICK_REPLICA], replica_name(SICK_REPLICA),
                lambda e: self._catalog_load(e).name, self._started_at_wall,
                not_before_wall=self._launched_at_wall)
            follower = LogFollower(f"127.0.0.1:{ports.eventlog}", SERVICE, view, watch,
                                   lambda e: self._phase(e).name, self._started_at_wall,
                                   self.tally, stories.shedding)
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
                        rows = await self._breakers(admin, stories)
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        endpoints = await self._endpoints(admin, watch, stories, elapsed)
                    for line in watch.due(elapsed):
                        view.endpoint(line)
                    snapshot = load.snapshot()
                    for note in stories.frame(elapsed, orders_phase.name,
                                              {n: t.totals for n, t in snapshot.items()}):
                        view.note(note)
                    view.frame(Frame(
                        elapsed_s=elapsed, duration_s=self.options.duration_s, phase=phase,
                        breakers=rows, load=snapshot,
                        events_by_upstream=dict(self.tally.events_by_upstream),
                        events_total=self.tally.events_total, endpoints=endpoints,
                        orders_phase=orders_phase, resilience=stories.rows,
                        catalog_load=self._catalog_load(elapsed)))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), FRAME_INTERVAL_S)
            finally:
                stop.set()
                await asyncio.gather(load_task, return_exceptions=True)
                await drain(follow_task)
                for line in watch.flush():
                    view.endpoint(line)
                for note in stories.flush():
                    view.note(note)
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
            self.load_totals = {name: dict(stats.totals)
                                for name, stats in load.snapshot().items()}
        return reason[0]

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
                print_where(self._out, self.options, data_dir, ports, kept, children)
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
            print_summary(self._out, self.load_totals, self.tally, self.watch, self.stories,
                          f"127.0.0.1:{ports.eventlog}")
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

