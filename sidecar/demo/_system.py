"""``sidecar demo``: the whole system on one machine, with no other setup.

Starts, each in its own process group:

1. a sample upstream (``python -m sidecar.demo.upstream``) whose ``payments`` service goes
   through phases (healthy, brownout, outage, recovery, repeating) while ``inventory`` stays
   healthy;
2. the event log (``sidecar eventlog serve``) on the embedded SQLite store in a temporary
   folder (``--data DIR`` keeps it);
3. the sidecar (``sidecar proxy``) in front of both upstreams, shipping its breaker events to
   the log;

then drives a load generator through the sidecar (the "host app") and shows every breaker's
state, call rates, window rates, open duration and the events read back from the log. It prints
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from sidecar.demo._load import LoadGenerator, Target
from sidecar.demo._phases import DEFAULT_SCHEDULE, PhaseAt, format_schedule, phase_at
from sidecar.demo._processes import Child, ChildError, Children, pick_port
from sidecar.demo._view import BreakerRow, Frame, TransitionLine, View
from sidecar.demo.upstream import INVENTORY_METHOD, INVENTORY_SERVICE, PAYMENTS_METHOD

__all__ = ["DemoOptions", "Ports", "prometheus_config", "run_demo", "sidecar_config"]

SERVICE: Final = "demo-shop"
INSTANCE: Final = "demo-shop-1"
"""The demo sidecar's identity (also the labels deploy/prometheus.yml gives its target)."""

PREFERRED_PORTS: Final[dict[str, int]] = {
    "upstream": 50051, "listen": 15001, "admin": 15000, "metrics": 9464,
    "eventlog": 7070, "eventlog_metrics": 9465,
}
DEFAULT_PAYMENTS_CALLS_PER_S: Final = 25.0
DEFAULT_INVENTORY_CALLS_PER_S: Final = 10.0
FRAME_INTERVAL_S: Final = 0.25
"""How often the view is refreshed and the admin API polled."""
ADMIN_TIMEOUT_S: Final = 1.0
SUBSCRIBE_RETRY_S: Final = 1.0
LOG_DRAIN_S: Final = 0.5
"""After the load stops, how long the demo keeps reading the event log before it stops."""
SIDECAR_SHUTDOWN_GRACE_S: Final = 3.0
CHILD_STOP_GRACE_S: Final = 8.0

DEMO_BREAKER: Final[dict[str, Any]] = {
    "window": {"type": "count", "size": 20},
    "minimum_calls": 10,
    "failure_rate": 0.5,
    "slow_call_ms": 250,
    "slow_call_rate": 0.6,
    "consecutive_failures": 5,
    "half_open_probes": 3,
    "open": {"base_ms": 1000, "multiplier": 2.0, "max_ms": 8000, "jitter": 0.1},
}
"""Tuned for a lively demo: trips within a second of a bad phase, back within seconds."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    duration_s: float | None = None
    data_dir: Path | None = None
    schedule: tuple[tuple[str, float], ...] = DEFAULT_SCHEDULE
    payments_calls_per_s: float = DEFAULT_PAYMENTS_CALLS_PER_S
    inventory_calls_per_s: float = DEFAULT_INVENTORY_CALLS_PER_S


@dataclass(frozen=True, slots=True)
class Ports:
    upstream: int
    listen: int
    admin: int
    metrics: int
    eventlog: int
    eventlog_metrics: int

    @classmethod
    def pick(cls) -> Ports:
        return cls(**{name: pick_port(port) for name, port in PREFERRED_PORTS.items()})


def sidecar_config(ports: Ports, data_dir: Path) -> dict[str, Any]:
    """The demo sidecar's configuration (see the configuration reference in README.md)."""
    upstream = f"127.0.0.1:{ports.upstream}"
    return {
        "service": SERVICE,
        "instance": INSTANCE,
        "listen": f"127.0.0.1:{ports.listen}",
        "admin_listen": f"127.0.0.1:{ports.admin}",
        "metrics_listen": f"127.0.0.1:{ports.metrics}",
        "shutdown_grace_s": SIDECAR_SHUTDOWN_GRACE_S,
        "upstreams": {
            "payments": {"address": upstream, "routes": ["/demo.shop.Payments/"],
                         "timeout_ms": 1000, "breaker": DEMO_BREAKER},
            "inventory": {"address": upstream, "routes": [f"/{INVENTORY_SERVICE}/"],
                          "timeout_ms": 1000},
        },
        "eventlog": {"address": f"127.0.0.1:{ports.eventlog}",
                     "outbox_path": str(data_dir / "sidecar-outbox.db")},
        "logging": {"level": "INFO"},
    }


def prometheus_config(ports: Ports) -> dict[str, Any]:
    """A Prometheus config scraping this demo (same jobs and labels as deploy/prometheus.yml)."""
    return {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "scrape_configs": [
            {"job_name": "evergreen-sidecar",
             "static_configs": [{"targets": [f"127.0.0.1:{ports.metrics}"],
                                 "labels": {"service": SERVICE, "instance": INSTANCE}}]},
            {"job_name": "evergreen-eventlog", "honor_labels": True,
             "static_configs": [{"targets": [f"127.0.0.1:{ports.eventlog_metrics}"]}]},
        ],
    }


@dataclass
class _Tally:
    """What the demo saw, for the summary."""

    transitions: list[TransitionLine] = field(default_factory=list)
    events_total: int = 0
    events_by_upstream: dict[str, int] = field(default_factory=dict)
    last_position: int = 0


def _plural(count: int, noun: str) -> str:
    if count == 1:
        return f"1 {noun}"
    return f"{count} {noun[:-1] + 'ies' if noun.endswith('y') else noun + 's'}"


def _state_name(value: int) -> str:
    from sidecar.v1 import events_pb2

    return str(events_pb2.BreakerState.Name(value)).removeprefix("BREAKER_STATE_")


class Demo:
    """One run of the demo. ``run()`` blocks until the duration ends or a signal arrives."""

    def __init__(self, options: DemoOptions, view_factory: Callable[[], View],
                 out: Callable[[str], None]) -> None:
        self.options = options
        self._view_factory = view_factory
        self._out = out
        self.children = Children()
        self.tally = _Tally()
        self._started_at_wall = 0.0
        self._started_at = 0.0
        self.load_totals: dict[str, dict[str, int]] = {}

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
        upstream.wait_for_port(ports.upstream)
        eventlog.wait_for_port(ports.eventlog)
        eventlog.wait_for_port(ports.eventlog_metrics)
        sidecar = self.children.start(
            "sidecar", [*sidecar_cmd, "proxy", "--config", str(config_path)],
            logs / "sidecar.log")
        for port in (ports.listen, ports.admin, ports.metrics):
            sidecar.wait_for_port(port)
        return {"upstream": upstream, "eventlog": eventlog, "sidecar": sidecar}

    def _print_endpoints(self, data_dir: Path, ports: Ports, kept: bool,
                         children: dict[str, Child]) -> None:
        out = self._out
        schedule = " -> ".join(f"{n} {s:g}s" for n, s in self.options.schedule)
        keep = "kept" if kept else "removed at exit; --data DIR keeps it"
        out(f"Evergreen Sidecar demo: service {SERVICE!r}, instance {INSTANCE!r} "
            f"(data in {data_dir}, {keep})")
        out(f"  sample upstream  127.0.0.1:{ports.upstream}   payments: {schedule} (repeating);"
            f" inventory: always healthy   [pid {children['upstream'].pid}]")
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
        out(f"    prometheus --config.file={data_dir / 'prometheus.yml'} "
            "--enable-feature=exemplar-storage   (then import dashboards/*.json in Grafana)")
        duration = (f"for {self.options.duration_s:g}s" if self.options.duration_s
                    else "until Ctrl-C")
        out(f"running {duration} ...")

    # --- the live part -------------------------------------------------------------------------

    def _phase(self, elapsed_s: float) -> PhaseAt:
        return phase_at(self.options.schedule, elapsed_s)

    def _transition_line(self, event: Any) -> TransitionLine:
        payload = event.breaker_transitioned
        occurred = event.occurred_at.seconds + event.occurred_at.nanos / 1e9
        elapsed = max(0.0, occurred - self._started_at_wall)
        return TransitionLine(
            elapsed_s=elapsed, phase=self._phase(elapsed).name,
            upstream=payload.upstream or payload.breaker,
            from_state=_state_name(payload.from_state), to_state=_state_name(payload.to_state),
            reason=payload.reason, failure_rate=payload.window.failure_rate,
            slow_call_rate=payload.window.slow_call_rate,
            open_duration_s=payload.open_duration_ms / 1000.0, trip_streak=payload.trip_streak,
            position=event.global_position, trace_id=event.trace_id,
        )

    async def _follow_log(self, address: str, view: View, stop: asyncio.Event) -> None:
        """Read every event of the demo's service back from the event log (Subscribe)."""
        import grpc

        from sidecar.v1 import eventlog_pb2, eventlog_pb2_grpc

        while not stop.is_set():
            try:
                async with grpc.aio.insecure_channel(address) as channel:
                    stub = eventlog_pb2_grpc.EventLogStub(channel)  # type: ignore[no-untyped-call]
                    call = stub.Subscribe(eventlog_pb2.SubscribeRequest(
                        from_position=self.tally.last_position + 1,
                        filter=eventlog_pb2.EventFilter(service=SERVICE),
                        heartbeat_interval_ms=1000))
                    async for message in call:
                        if message.WhichOneof("message") != "event":
                            continue
                        event = message.event
                        self.tally.last_position = event.global_position
                        self.tally.events_total += 1
                        if event.WhichOneof("payload") == "breaker_transitioned":
                            line = self._transition_line(event)
                            self.tally.events_by_upstream[line.upstream] = (
                                self.tally.events_by_upstream.get(line.upstream, 0) + 1)
                            self.tally.transitions.append(line)
                            view.transition(line)
            except grpc.aio.AioRpcError:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), SUBSCRIBE_RETRY_S)

    async def _drain_log(self, follow_task: asyncio.Task[None]) -> None:
        """Give the last transitions time to travel sidecar -> outbox -> log -> here, then
        stop following the log (its stream never ends by itself)."""
        await asyncio.sleep(LOG_DRAIN_S)
        follow_task.cancel()
        await asyncio.gather(follow_task, return_exceptions=True)

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
                name=info.name, state=_state_name(info.state), mode=str(info.mode),
                window_calls=info.window.calls, failure_rate=info.window.failure_rate,
                slow_call_rate=info.window.slow_call_rate,
                open_duration_s=info.open_duration_ms / 1000.0, open_remaining_s=remaining,
                trip_streak=info.trip_streak))
        return sorted(rows, key=lambda r: r.name != "payments")

    async def _live(self, ports: Ports, upstream_pid: int, view: View) -> str:
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
            ])
            self._started_at = time.monotonic()
            self._started_at_wall = time.time()
            os.kill(upstream_pid, signal.SIGUSR1)  # the upstream's phase clock starts now
            load_task = asyncio.create_task(load.run(stop))
            follow_task = asyncio.create_task(
                self._follow_log(f"127.0.0.1:{ports.eventlog}", view, stop))
            phase_name = ""
            rows: list[BreakerRow] = []
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
                    phase = self._phase(elapsed)
                    if phase.name != phase_name or elapsed < phase.started_s:
                        phase_name = phase.name
                        view.phase(phase, elapsed)
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        rows = await self._breakers(admin)
                    view.frame(Frame(
                        elapsed_s=elapsed, duration_s=self.options.duration_s, phase=phase,
                        breakers=rows, load=load.snapshot(),
                        events_by_upstream=dict(self.tally.events_by_upstream),
                        events_total=self.tally.events_total))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), FRAME_INTERVAL_S)
            finally:
                stop.set()
                await asyncio.gather(load_task, return_exceptions=True)
                await self._drain_log(follow_task)
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
        if eventlog_address:
            out(f"  {self.tally.events_total} events of {SERVICE!r} read back from the event log")

    # --- entry point ----------------------------------------------------------------------------

    def run(self) -> int:
        with _data_dir(self.options.data_dir) as (data_dir, kept):
            ports = Ports.pick()
            try:
                try:
                    children = self._start_processes(data_dir, ports)
                except (ChildError, OSError) as exc:
                    self._out(f"sidecar demo: could not start: {exc}")
                    return 1
                self._print_endpoints(data_dir, ports, kept, children)
                view = self._view_factory()
                try:
                    reason = asyncio.run(self._live(ports, children["upstream"].pid, view))
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

