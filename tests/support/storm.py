"""An incident storm against a real event log: many simulated sidecars, several per process,
trip a dozen breakers each at the same instant and ship at once. Shared by
``benchmarks/storm.py`` (200 sidecars, figures for RESULTS.md) and ``tests/chaos/test_storm.py``
(a smaller storm against a low admission limit).

One simulated sidecar is the event pipeline as :meth:`sidecar.events.plugin.EventPipeline.open`
wires it: real :class:`~sidecar.breaker.CircuitBreaker` objects (one per upstream) with an
:class:`~sidecar.events.producer.EventRecorder` as listener, its queue, the
:class:`~sidecar.events.writer.OutboxWriter` thread, a SQLite :class:`Outbox` and the
:class:`Shipper` thread with its :class:`GrpcEventExporter` (wrapped to time every Append).
Before the storm each sidecar ships its ``ConfigApplied`` (as the proxy does at start), so the
log knows every stream's head, as in a mesh that has been running.

Processes: ``run_storm`` starts ``processes`` workers (``python -m tests.support.storm``), each
holding ``sidecars / processes`` sidecars; every worker says READY on stdout once its sidecars
have shipped their ConfigApplied, then all get one start instant (wall clock) on stdin, so the
trips of every sidecar fall within the same second. The driver then polls the log until every
event is read back (``durable_s``, from the start instant), collects each worker's JSON result
(every event id it recorded, the duration and outcome of every Append) and reads the whole log
to check that every recorded id is stored exactly once.

Blocking and heavy (processes, threads, disk): benchmarks and chaos tests only.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from sidecar.breaker import BreakerSettings, CircuitBreaker, State
from sidecar.events.outbox import Outbox
from sidecar.events.producer import EventQueue, EventRecorder
from sidecar.events.settings import EventsSettings
from sidecar.events.shipper import Acknowledgement, ExportError, GrpcEventExporter, Shipper
from sidecar.events.writer import OutboxWriter
from sidecar.ids import uuid7
from sidecar.v1 import eventlog_pb2, eventlog_pb2_grpc, events_pb2
from tests.support.procs import PYTHON

__all__ = ["StormPlan", "StormResult", "check_log", "read_log", "run_storm", "vm_hwm_kib"]

ROOT = Path(__file__).resolve().parents[2]
TRIP_SETTINGS = BreakerSettings(consecutive_failures=5, minimum_calls=5, window_size=10)
"""The simulated upstreams' breakers: five failed calls in a row trip one."""
READ_PAGE = 5_000
POLL_S = 0.05


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size of a process (``VmHWM`` in /proc/PID/status), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")


# --- the worker side ----------------------------------------------------------------------------


class TimedExporter:
    """The real exporter, with the duration and outcome of every Append recorded, and for each
    refusal that carried a retry hint, how long after its answer the next Append started
    (``hint_gaps_s``: that time minus the hint capped at ``cap_s``, the shipper's
    ``backoff_max_ms``; a shipper that honours hints never goes below 0)."""

    def __init__(self, inner: GrpcEventExporter, cap_s: float) -> None:
        self._inner = inner
        self._cap_s = cap_s
        self.appends: list[tuple[float, str]] = []
        self.hint_gaps_s: list[float] = []
        self._hinted_until: float | None = None
        self._lock = threading.Lock()

    def append(self, events: Sequence[events_pb2.Event],
               timeout_s: float) -> list[Acknowledgement]:
        started = time.monotonic()
        code = "OK"
        hint: float | None = None
        if self._hinted_until is not None:
            self.hint_gaps_s.append(started - self._hinted_until)
            self._hinted_until = None
        try:
            return self._inner.append(events, timeout_s)
        except ExportError as exc:
            code, hint = exc.code, exc.retry_after_s
            raise
        finally:
            ended = time.monotonic()
            if hint is not None:
                self._hinted_until = ended + min(hint, self._cap_s)
            with self._lock:
                self.appends.append((ended - started, code))

    def read_stream(self, stream: str, from_version: int, limit: int,
                    timeout_s: float) -> list[events_pb2.Event]:
        return self._inner.read_stream(stream, from_version, limit, timeout_s)

    def stream_anchor(self, stream: str, timeout_s: float) -> tuple[int, bytes]:
        return self._inner.stream_anchor(stream, timeout_s)

    def close(self) -> None:
        self._inner.close()


class SimSidecar:
    """One sidecar's breakers and event pipeline (see the module docstring)."""

    def __init__(self, index: int, address: str, workdir: Path, breakers: int,
                 shipping: dict[str, Any]) -> None:
        self.ids: list[str] = []
        self.queue = EventQueue(10_000)
        self.recorder = EventRecorder(f"svc-{index % 10}", f"pod-{index:04d}", self.queue,
                                      ids=self._id)
        settings = EventsSettings(outbox_path=str(workdir / f"outbox-{index}.db"), **shipping)
        self.outbox = Outbox(settings.outbox_path, max_events=settings.outbox_max_events,
                             keep_acked=settings.outbox_keep_acked)
        self.exporter = TimedExporter(GrpcEventExporter(
            address, max_reconnect_backoff_ms=int(settings.backoff_max_ms)),
            settings.backoff_max_ms / 1000)
        self.shipper = Shipper(self.outbox, self.exporter, settings)
        self.writer = OutboxWriter(self.queue, self.outbox, batch_size=settings.batch_size,
                                   on_written=self.shipper.wake)
        self.breakers = [CircuitBreaker(f"upstream-{b:02d}", TRIP_SETTINGS)
                         for b in range(breakers)]
        for breaker in self.breakers:
            breaker.add_listener(self.recorder)
        self.shipper.start()
        self.writer.start()
        self.recorder.config_applied("0" * 64, [b.name for b in self.breakers], "file")

    def _id(self) -> str:
        event_id = uuid7()
        self.ids.append(event_id)
        return event_id

    def drained(self) -> bool:
        return self.queue.depth() == 0 and self.outbox.stats().pending == 0

    def trip_all(self) -> None:
        """Fail calls on every breaker until each is OPEN: one transition event each."""
        for breaker in self.breakers:
            while breaker.state is not State.OPEN:
                permit = breaker.try_acquire()
                if permit is None:
                    break
                breaker.record(permit, 0.001, failed=True)

    def close(self) -> None:
        self.writer.stop(5.0)
        self.shipper.stop(5.0)
        self.outbox.close()


def _wait(condition: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


def worker_main(argv: Sequence[str]) -> int:
    """One worker process: build its sidecars, say READY, storm at the start instant, drain,
    write the result file."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--breakers", type=int, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--shipping", default="{}")
    parser.add_argument("--drain-timeout-s", type=float, default=300.0)
    parser.add_argument("--ready-timeout-s", type=float, default=300.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s worker %(levelname)s %(name)s: %(message)s")
    args.workdir.mkdir(parents=True, exist_ok=True)
    shipping = json.loads(args.shipping)
    sidecars = [SimSidecar(i, args.address, args.workdir, args.breakers, shipping)
                for i in range(args.first, args.first + args.count)]
    ready = _wait(lambda: all(s.drained() for s in sidecars), args.ready_timeout_s)
    print("READY" if ready else "NOT_READY", flush=True)
    start_at = float(sys.stdin.readline())
    time.sleep(max(0.0, start_at - time.time()))
    tripped_at = time.time()
    for sidecar in sidecars:
        sidecar.trip_all()
    trips_done_at = time.time()
    drained = _wait(lambda: all(s.drained() for s in sidecars), args.drain_timeout_s)
    drained_at = time.time()
    result = {
        "tripped_at": tripped_at, "trips_done_at": trips_done_at, "drained": drained,
        "drained_at": drained_at,
        "ids": [i for s in sidecars for i in s.ids],
        "appends": [a for s in sidecars for a in s.exporter.appends],
        "hint_gaps_s": [g for s in sidecars for g in s.exporter.hint_gaps_s],
        "failures": dict(sum((Counter(s.shipper.stats().failures) for s in sidecars),
                             Counter())),
        "pending": sum(s.outbox.stats().pending for s in sidecars),
    }
    for sidecar in sidecars:
        sidecar.close()
    (args.workdir / "result.json").write_text(json.dumps(result))
    return 0


# --- the driver side ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StormPlan:
    """How big a storm, and where it goes."""

    address: str
    workdir: Path
    sidecars: int = 200
    processes: int = 8
    breakers: int = 12
    shipping: dict[str, Any] = field(default_factory=dict)
    """EventsSettings overrides for every sidecar (default: the proxy's defaults)."""
    start_delay_s: float = 1.0
    """From the last worker's READY to the start instant (time to hand it to every worker)."""
    ready_timeout_s: float = 300.0
    """Longest a worker waits for its sidecars' ConfigApplied to be shipped."""
    drain_timeout_s: float = 300.0
    """Longest wait, after the start instant, for every event to be shipped and read back."""


@dataclass
class StormResult:
    """What one storm did and what the log holds afterwards."""

    sidecars: int
    processes: int
    storm_events: int
    """Events the storm recorded (one per tripped breaker)."""
    expected_ids: set[str]
    """Every event id the sidecars recorded (ConfigApplied and storm)."""
    durable_s: float
    """From the start instant until every recorded event was read back from the log."""
    trips_spread_s: float
    """From the first worker's first trip to the last worker's last trip."""
    drained_s: float
    """From the start instant until the last worker's outboxes were empty."""
    append_latencies_s: list[float]
    append_result_codes: list[str]
    """The outcome of each Append of ``append_latencies_s`` (``OK`` or the status name)."""
    append_codes: Counter[str]
    worker_failures: Counter[str]
    hint_gaps_s: list[float] = field(default_factory=list)
    """Per hinted refusal followed by another Append of that shipper: the time between the
    refusal's answer and that Append, minus the hint capped at ``backoff_max_ms`` (>= 0 when
    every hint was honoured)."""
    stored: int = 0
    distinct: int = 0
    missing: int = 0
    unexpected: int = 0

    def latencies_s(self, ok: bool) -> list[float]:
        """Append durations of the accepted (``ok``) or the failed/refused RPCs."""
        return [d for d, code in zip(self.append_latencies_s, self.append_result_codes,
                                     strict=True) if (code == "OK") == ok]

    @property
    def exactly_once(self) -> bool:
        return (self.stored == self.distinct == len(self.expected_ids)
                and self.missing == self.unexpected == 0)


def read_log(stub: Any, timeout_s: float = 30.0) -> list[events_pb2.Event]:
    """Every event of the log, by ReadAll pages."""
    events: list[events_pb2.Event] = []
    position = 1
    while True:
        page = stub.ReadAll(eventlog_pb2.ReadAllRequest(from_position=position, limit=READ_PAGE),
                            timeout=timeout_s)
        events.extend(page.events)
        if len(page.events) < READ_PAGE:
            return events
        position = int(page.next_position)


def _head(stub: Any) -> int:
    page = stub.ReadAll(eventlog_pb2.ReadAllRequest(from_position=1 << 62, limit=1),
                        timeout=10.0)
    return int(page.head_position)


def run_storm(plan: StormPlan, *, head_before: int = 0) -> StormResult:
    """Run one storm against the log at ``plan.address``; raises if a worker fails.
    ``head_before``: events the log held before (not the storm's)."""
    per = [plan.sidecars // plan.processes + (1 if n < plan.sidecars % plan.processes else 0)
           for n in range(plan.processes)]
    workers: list[tuple[subprocess.Popen[str], Path]] = []
    first = 0
    try:
        for n, count in enumerate(per):
            workdir = plan.workdir / f"worker-{n}"
            workdir.mkdir(parents=True, exist_ok=True)
            stderr = open(workdir / "worker.log", "w")  # the child keeps its copy
            proc = subprocess.Popen(
                [PYTHON, "-m", "tests.support.storm", "--address", plan.address,
                 "--first", str(first), "--count", str(count), "--breakers", str(plan.breakers),
                 "--workdir", str(workdir), "--shipping", json.dumps(plan.shipping),
                 "--drain-timeout-s", str(plan.drain_timeout_s),
                 "--ready-timeout-s", str(plan.ready_timeout_s)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
                cwd=ROOT)
            stderr.close()
            workers.append((proc, workdir))
            first += count
        for proc, workdir in workers:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != "READY":
                raise RuntimeError(f"worker not ready ({line!r}):\n"
                                   f"{(workdir / 'worker.log').read_text()[-3000:]}")
        expected_total = head_before + plan.sidecars * (1 + plan.breakers)
        start_at = time.time() + plan.start_delay_s
        for proc, _ in workers:
            assert proc.stdin is not None
            proc.stdin.write(f"{start_at!r}\n")
            proc.stdin.flush()
        durable_s = _poll_durable(plan, start_at, expected_total)
        results = []
        for proc, workdir in workers:
            if proc.wait(timeout=plan.drain_timeout_s + 60) != 0:
                raise RuntimeError(f"worker failed:\n{(workdir / 'worker.log').read_text()}")
            results.append(json.loads((workdir / "result.json").read_text()))
    finally:
        for proc, _ in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    undrained = [r for r in results if not r["drained"]]
    if undrained:
        raise RuntimeError(f"{len(undrained)} workers did not drain: "
                           f"{sum(r['pending'] for r in undrained)} events pending")
    appends = [a for r in results for a in r["appends"]]
    return StormResult(
        sidecars=plan.sidecars, processes=plan.processes,
        storm_events=plan.sidecars * plan.breakers,
        expected_ids={i for r in results for i in r["ids"]},
        durable_s=durable_s,
        trips_spread_s=max(r["trips_done_at"] for r in results)
        - min(r["tripped_at"] for r in results),
        drained_s=max(r["drained_at"] for r in results) - start_at,
        append_latencies_s=[d for d, _ in appends],
        append_result_codes=[code for _, code in appends],
        append_codes=Counter(code for _, code in appends),
        worker_failures=sum((Counter(r["failures"]) for r in results), Counter()),
        hint_gaps_s=[g for r in results for g in r["hint_gaps_s"]],
    )


def _poll_durable(plan: StormPlan, start_at: float, expected_total: int) -> float:
    """Seconds from ``start_at`` until the log's head reaches ``expected_total``."""
    channel = grpc.insecure_channel(plan.address)
    stub = eventlog_pb2_grpc.EventLogStub(channel)  # type: ignore[no-untyped-call]
    deadline = time.monotonic() + plan.drain_timeout_s
    try:
        while True:
            try:
                if _head(stub) >= expected_total:
                    return time.time() - start_at
            except grpc.RpcError:
                pass  # the log is busy: the storm is what we measure
            if time.monotonic() > deadline:
                raise TimeoutError(f"the log did not reach {expected_total} events in "
                                   f"{plan.drain_timeout_s}s")
            time.sleep(POLL_S)
    finally:
        channel.close()


def check_log(result: StormResult, stub: Any) -> list[events_pb2.Event]:
    """Read the whole log into ``result``'s exactly-once figures; returns the events."""
    events = read_log(stub)
    ids = [e.event_id for e in events]
    distinct = set(ids)
    result.stored, result.distinct = len(ids), len(distinct)
    result.missing = len(result.expected_ids - distinct)
    result.unexpected = len(distinct - result.expected_ids)
    return events


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
