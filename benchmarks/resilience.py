"""Retries, hedging and the adaptive concurrency limit: what configuring retries costs
the proxy when nothing fails, and what an adaptive limit buys under overload.

Two parts, one run, every server in its own process on 127.0.0.1 (process management, the load
generator and the CPU measurement are ``benchmarks/proxy.py``'s and ``benchmarks/endpoints.py``'s):

- **CPU** (target: retries configured within 5% of none): an echo server and three sidecars
  started through the CLI (tracing off, metrics on): no ``retry``; ``retry: {max_attempts: 3}``
  listing the benchmark's method (nothing fails, so no call is retried: what is measured is the
  bookkeeping of a retryable call: its budget deposit, the request kept for a replay, the
  commit tracking); and a second sidecar without ``retry``, an A/A control whose distance from
  the first is the noise floor of the run. Unary calls, 100-byte payload, at concurrency 1 and
  64; judged on the median over rounds of each round's ratio to the no-retry cell.
- **Overload** (offered load 3x capacity): one ``tests/support/upstream.py`` process serving at
  most ``--capacity`` calls at once, each taking ``--service-ms`` (more wait in the server, so
  latency grows with load like a real saturated service); three sidecars in front of it: no
  limit (``max_concurrent_requests: 1000``), a fixed limit (``max_concurrent_requests`` = 2x
  capacity) and ``adaptive_concurrency: gradient2``. An open-loop client sends calls at 3x the
  upstream's capacity with a 1 s deadline each. Per cell: goodput (OK calls per second), the p50
  and p99 of the OK calls, how many were shed (RESOURCE_EXHAUSTED from the sidecar at once) and
  how many missed their deadline; for gradient2 also the limit at the end (admin API).

Rounds interleave the cells; each figure is the median over rounds. Default run: about 2
minutes; ``--check`` exits 1 when the CPU target is missed or gradient2's p99 is not below the
no-limit cell's.

Usage::

    .venv/bin/python benchmarks/resilience.py              # prints, updates RESULTS.md
    .venv/bin/python benchmarks/resilience.py --seconds 0.5 --rounds 1 --no-write
    .venv/bin/python benchmarks/resilience.py --only overload --no-write
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _results  # benchmarks/_results.py (this folder is on sys.path)
import grpc
from endpoints import NO_TRACING, UpstreamProcess, _cpu_cell, _log, _rotated, _start_upstream
from proxy import ECHO_ARGS, Cell, Processes

from sidecar.v1 import admin_pb2, admin_pb2_grpc

SECTION = "resilience"
RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
TARGET_CPU_RATIO = 1.05
CPU_CONCURRENCIES = (1, 64)
NONE, RETRY, AGAIN = "no retry", "retry: 3 attempts, none fail", "no retry (A/A control)"
CPU_CONFIGS = (NONE, RETRY, AGAIN)
BENCH_METHOD_PREFIX = "/bench."
CPU_WARMUP_S = 0.25
DEFAULT_SECONDS, DEFAULT_ROUNDS = 1.5, 6

NO_LIMIT, FIXED, GRADIENT2 = "no limit", "fixed limit", "gradient2"
OVERLOAD_CONFIGS = (NO_LIMIT, FIXED, GRADIENT2)
OVERLOAD_METHOD = "/sidecar.test.Echo/Unary"
OVERLOAD_FACTOR = 3.0
CALL_DEADLINE_S = 1.0
DEFAULT_CAPACITY, DEFAULT_SERVICE_MS = 8, 25.0
DEFAULT_OVERLOAD_SECONDS, DEFAULT_OVERLOAD_ROUNDS = 5.0, 2
OVERLOAD_WARMUP_S = 3.0  # long enough for gradient2 to find the limit from its initial 20
LIGHT_SHARE, LIGHT_S = 0.25 / OVERLOAD_FACTOR, 2.0
"""Before the first overload each sidecar sees 2 s at a quarter of the capacity: gradient2 learns
the unloaded RTT it compares against (started straight into an overload it learns the overloaded
RTT as its baseline and settles too high, a known limit of latency-based limits)."""
LAUNCH_TICK_S = 0.005  # the open-loop client launches the calls due every 5 ms


# --- part 1: proxy CPU per call, retries configured vs none ------------------------------------


def _cpu_upstream(name: str, echo: str) -> dict[str, Any]:
    upstream: dict[str, Any] = {"address": echo, "routes": [BENCH_METHOD_PREFIX]}
    if name == RETRY:
        upstream["retry"] = {"max_attempts": 3, "methods": [BENCH_METHOD_PREFIX]}
    return {"echo": upstream}


def run_cpu(workdir: Path, seconds: float, rounds: int) -> dict[tuple[str, int], list[Cell]]:
    procs = Processes()
    try:
        echo = f"127.0.0.1:{procs.start('echo', ECHO_ARGS)}"
        for name in CPU_CONFIGS:
            procs.start_sidecar(name, workdir, _cpu_upstream(name, echo), env=NO_TRACING)
        time.sleep(1.0)  # let the sidecars learn shapes from reflection
        cells: dict[tuple[str, int], list[Cell]] = {}
        for round_index in range(rounds):
            for concurrency in CPU_CONCURRENCIES:
                for name in _rotated(CPU_CONFIGS, round_index):
                    cell, _ = _cpu_cell(procs, name, concurrency, seconds)
                    cells.setdefault((name, concurrency), []).append(cell)
                    _log(cell)
        return cells
    finally:
        procs.close()


def _ratio(cells: dict[tuple[str, int], list[Cell]], name: str, concurrency: int) -> float:
    """Median over rounds of the round's CPU per call of ``name`` over the no-retry cell's."""
    return statistics.median(
        c.cpu_us_per_call / base.cpu_us_per_call
        for c, base in zip(cells[(name, concurrency)], cells[(NONE, concurrency)], strict=True))


def cpu_report(cells: dict[tuple[str, int], list[Cell]]) -> tuple[list[str], bool]:
    lines = ["### Proxy CPU per call: retries configured vs none (target: within 5%)", "",
             "| config | callers | CPU µs/call | vs no retry | calls/s | p50 ms | p99 ms |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    ok = True
    for concurrency in CPU_CONCURRENCIES:
        for name in CPU_CONFIGS:
            rounds = cells[(name, concurrency)]
            cpu = statistics.median(c.cpu_us_per_call for c in rounds)
            ratio = _ratio(cells, name, concurrency)
            if name == RETRY and ratio > TARGET_CPU_RATIO:
                ok = False
            lines.append(
                f"| {name} | {concurrency} | {cpu:.0f} | {ratio:.3f} | "
                f"{statistics.median(c.throughput for c in rounds):,.0f} | "
                f"{statistics.median(c.p50_ms for c in rounds):.3f} | "
                f"{statistics.median(c.p99_ms for c in rounds):.3f} |")
    noise = max(abs(_ratio(cells, AGAIN, c) - 1) for c in CPU_CONCURRENCIES)
    worst = max(_ratio(cells, RETRY, c) for c in CPU_CONCURRENCIES)
    lines += ["", f"Worst ratio with retries configured: {worst:.3f} "
              f"({'met' if ok else 'MISSED'}: target ≤ {TARGET_CPU_RATIO}); "
              f"A/A control within {noise:.1%} of the baseline (the run's noise floor)."]
    return lines, ok


# --- part 2: overload, offered load 3x capacity --------------------------------------------------


@dataclass(frozen=True)
class OverloadCell:
    config: str
    offered: int
    ok: int
    shed: int
    deadline: int
    other: int
    seconds: float
    p50_ms: float
    p99_ms: float
    shed_p99_ms: float
    limit: int | None

    @property
    def goodput(self) -> float:
        return self.ok / self.seconds


def _overload_upstream(name: str, address: str, capacity: int) -> dict[str, Any]:
    upstream: dict[str, Any] = {
        "address": address, "routes": ["/sidecar.test."], "timeout_ms": 5000,
        # the breaker would open on the no-limit cell's timeouts and hide the queueing
        "breaker": {"mode": "metrics_only"},
        "max_concurrent_requests": 1000,
    }
    if name == FIXED:
        upstream["max_concurrent_requests"] = 2 * capacity
    elif name == GRADIENT2:
        upstream["adaptive_concurrency"] = {"algorithm": "gradient2"}
    return {"svc": upstream}


async def _open_loop(port: int, rate: float, seconds: float, warmup_s: float
                     ) -> tuple[list[float], list[float], dict[str, int], int, float]:
    """Calls launched at ``rate`` per second whatever the answers (open loop), for ``warmup_s``
    unmeasured then ``seconds`` measured; latencies of the OK calls, of the shed calls, counts
    by outcome, calls launched, measured seconds."""
    ok_latencies: list[float] = []
    shed_latencies: list[float] = []
    counts = {"ok": 0, "shed": 0, "deadline": 0, "other": 0}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(OVERLOAD_METHOD)

        async def one(measured: bool) -> None:
            started = time.perf_counter()
            try:
                await call(b"x" * 100, timeout=CALL_DEADLINE_S)
                outcome = "ok"
            except grpc.aio.AioRpcError as error:
                code = error.code()
                overflow = any(k == "x-sidecar-overflow" for k, _ in (error.trailing_metadata()
                                                                        or ()))
                outcome = ("shed" if code == grpc.StatusCode.RESOURCE_EXHAUSTED and overflow
                           else "deadline" if code == grpc.StatusCode.DEADLINE_EXCEEDED
                           else "other")
            if measured:
                counts[outcome] += 1
                if outcome == "ok":
                    ok_latencies.append(time.perf_counter() - started)
                elif outcome == "shed":
                    shed_latencies.append(time.perf_counter() - started)

        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        measure_from, end = start + warmup_s, start + warmup_s + seconds
        launched = measured_launched = 0
        while (now := time.monotonic()) < end:
            due = int((now - start) * rate) - launched
            for _ in range(due):
                task = asyncio.create_task(one(now >= measure_from))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                measured_launched += now >= measure_from
            launched += due
            await asyncio.sleep(LAUNCH_TICK_S)
        await asyncio.gather(*tasks)
    return ok_latencies, shed_latencies, counts, measured_launched, seconds


def _percentile_ms(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def _adaptive_limit(admin: str) -> int | None:
    """The adaptive limit the sidecar's admin ``ListBreakers`` reports for its upstream."""
    with grpc.insecure_channel(admin) as channel:
        stub = admin_pb2_grpc.SidecarAdminStub(channel)  # type: ignore[no-untyped-call]
        response = stub.ListBreakers(admin_pb2.ListBreakersRequest(), timeout=10)
    for breaker in response.breakers:
        limit = breaker.concurrency
        if limit.algorithm:
            return int(limit.limit)
    return None


def run_overload(workdir: Path, seconds: float, rounds: int, capacity: int,
                 service_ms: float) -> dict[str, list[OverloadCell]]:
    procs = Processes()
    upstream: UpstreamProcess | None = None
    try:
        upstream = _start_upstream(workdir)
        upstream.configure("*", capacity=capacity, delay_ms=service_ms)
        for name in OVERLOAD_CONFIGS:
            procs.start_sidecar(name, workdir,
                                _overload_upstream(name, upstream.address, capacity),
                                env=NO_TRACING)
        time.sleep(1.0)
        rate = OVERLOAD_FACTOR * capacity / (service_ms / 1000)
        for name in OVERLOAD_CONFIGS:  # a service starts under its usual load, not overloaded
            asyncio.run(_open_loop(procs.ports[name], rate * LIGHT_SHARE, LIGHT_S, 0.0))
        cells: dict[str, list[OverloadCell]] = {}
        for round_index in range(rounds):
            for name in _rotated(OVERLOAD_CONFIGS, round_index):
                ok, shed, counts, offered, measured = asyncio.run(
                    _open_loop(procs.ports[name], rate, seconds, OVERLOAD_WARMUP_S))
                limit = _adaptive_limit(procs.admin[name]) if name == GRADIENT2 else None
                cell = OverloadCell(name, offered, counts["ok"], counts["shed"],
                                    counts["deadline"], counts["other"], measured,
                                    _percentile_ms(ok, 0.5), _percentile_ms(ok, 0.99),
                                    _percentile_ms(shed, 0.99), limit)
                cells.setdefault(name, []).append(cell)
                print(f"{name:12} offered {offered / measured:6.0f}/s goodput "
                      f"{cell.goodput:6.0f}/s p50 {cell.p50_ms:7.1f} ms p99 {cell.p99_ms:7.1f} ms"
                      f" shed {cell.shed} deadline {cell.deadline} other {cell.other}"
                      f" limit {limit}", flush=True)
                time.sleep(CALL_DEADLINE_S)  # the upstream drains before the next cell
        return cells
    finally:
        procs.close()
        if upstream is not None:
            upstream.close()


def _median_by(cells: list[OverloadCell], attribute: str) -> float:
    return statistics.median(float(getattr(c, attribute)) for c in cells)


def overload_report(cells: dict[str, list[OverloadCell]], capacity: int, service_ms: float
                    ) -> tuple[list[str], bool]:
    capacity_per_s = capacity / (service_ms / 1000)
    lines = [
        f"### Overload: offered load {OVERLOAD_FACTOR:g}x capacity", "",
        f"One upstream serving {capacity} calls at once, {service_ms:g} ms each (capacity "
        f"{capacity_per_s:,.0f} calls/s), offered {OVERLOAD_FACTOR * capacity_per_s:,.0f} "
        f"calls/s open loop with a {CALL_DEADLINE_S:g} s deadline each; fixed limit = "
        f"{2 * capacity} (`max_concurrent_requests`).", "",
        "| limit | goodput calls/s | admitted p50 ms | admitted p99 ms | shed /s | shed p99 ms "
        "| missed deadline /s | limit at end |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in OVERLOAD_CONFIGS:
        rounds = cells[name]
        seconds = _median_by(rounds, "seconds")
        limit = rounds[-1].limit
        lines.append(
            f"| {name} | {_median_by(rounds, 'goodput'):,.0f} | {_median_by(rounds, 'p50_ms'):.1f}"
            f" | {_median_by(rounds, 'p99_ms'):.1f} | {_median_by(rounds, 'shed') / seconds:,.0f}"
            f" | {_median_by(rounds, 'shed_p99_ms'):.1f}"
            f" | {_median_by(rounds, 'deadline') / seconds:,.0f}"
            f" | {limit if limit is not None else '—'} |")
    def p99(name: str) -> float:  # no admitted call at all: as bad as it gets
        value = _median_by(cells[name], "p99_ms")
        return float("inf") if value != value else value

    ok = (p99(GRADIENT2) < p99(NO_LIMIT)
          and _median_by(cells[GRADIENT2], "goodput") >= 0.8 * capacity_per_s)
    lines += ["", "Expected shape: without a limit the queue builds in the upstream until calls "
              "miss their deadline; a fixed limit bounds the queue but must be guessed; gradient2 "
              f"finds a limit near the capacity from latency alone ({'seen' if ok else 'NOT seen'}"
              ": gradient2's admitted p99 below the no-limit one, and its goodput at least 80% "
              "of the capacity)."]
    return lines, ok


# --- main ----------------------------------------------------------------------------------------


def write_section(path: Path, body: str) -> None:
    _results.write_section(path, SECTION, "Retries and the adaptive limit "
                           "(`benchmarks/resilience.py`)", body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="per CPU cell")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="CPU rounds")
    parser.add_argument("--overload-seconds", type=float, default=DEFAULT_OVERLOAD_SECONDS)
    parser.add_argument("--overload-rounds", type=int, default=DEFAULT_OVERLOAD_ROUNDS)
    parser.add_argument("--capacity", type=int, default=DEFAULT_CAPACITY)
    parser.add_argument("--service-ms", type=float, default=DEFAULT_SERVICE_MS)
    parser.add_argument("--only", choices=("cpu", "overload"), help="run one part")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    parser.add_argument("--results", type=Path, default=RESULTS_PATH)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rounds < 1 or args.overload_rounds < 1 or args.capacity < 1:
        parser.error("--seconds must be > 0, rounds and --capacity >= 1")
    load_before = os.getloadavg()[0]
    body: list[str] = []
    verdicts: list[bool] = []
    with tempfile.TemporaryDirectory() as workdir:
        if args.only in (None, "cpu"):
            lines, ok = cpu_report(run_cpu(Path(workdir), args.seconds, args.rounds))
            body += [*lines, ""]
            verdicts.append(ok)
        if args.only in (None, "overload"):
            lines, ok = overload_report(
                run_overload(Path(workdir), args.overload_seconds, args.overload_rounds,
                             args.capacity, args.service_ms), args.capacity, args.service_ms)
            body += [*lines, ""]
            verdicts.append(ok)
    body += [f"Run: {platform.python_implementation()} {platform.python_version()}, "
             f"{os.cpu_count()} CPUs, load average {load_before:.2f} before the run; "
             f"CPU {args.rounds} rounds x {args.seconds:g} s, overload {args.overload_rounds} "
             f"rounds x {args.overload_seconds:g} s (+{OVERLOAD_WARMUP_S:g} s warm-up). "
             "Command: `.venv/bin/python benchmarks/resilience.py`."]
    text = "\n".join(body)
    print(text)
    if not args.no_write and args.only is None:
        write_section(args.results, text)
    return 1 if args.check and not all(verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
