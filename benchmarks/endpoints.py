"""Endpoints per upstream: what spreading calls over several endpoints costs the
proxy, and what the balancer buys when one endpoint is slow.

Two parts, one run, every server in its own process on 127.0.0.1 (process management, the load
generator and the per-cell measurement are ``benchmarks/proxy.py``'s):

- **CPU** (target: 3 endpoints within 5% of 1): three echo servers (``proxy.py``'s) and three
  sidecars started through the CLI (tracing off via ``OTEL_SDK_DISABLED=true``, metrics on):
  upstream ``address: a``; ``endpoints: [a, b, c]`` with ``balancer: p2c_ewma``; and a second
  ``address: a``, an A/A control whose distance from the first is the noise floor of the run.
  Unary calls, 100-byte payload, at concurrency 1 and 64; CPU µs/call = user+system CPU of the
  sidecar process over the cell / calls. Judged on the median over rounds of each round's
  ratio to the ``address: a`` cell of the same round. Each cell also splits the sidecar's CPU
  into its main thread (Python) and its other threads (grpc core). Apart from that, the
  balancer's own work per call (pick, start, finish) with 1 and 3 endpoints, in this process.
  When the target is missed (or with ``--profile``), both configs run again in fresh sidecars
  under cProfile (``benchmarks/_profiled.py``: the main thread's CPU time, only while cells
  are measured), and the section says where the extra time per call goes.
- **One of three endpoints +50 ms**: three upstreams (``tests/support/upstream.py``, whose
  ``delay_ms`` switch slows the third), one sidecar per balancer (``p2c_ewma``,
  ``least_request``, ``round_robin``) over the same ``endpoints``, at each ``--concurrency``
  (default 4 and 16 callers: 16 saturates two shared cores, 4 does not). Per cell: throughput,
  the callers' p50 / p99, the share of calls the slow endpoint answered (from the upstreams'
  own call counters, read when the warm-up ends and when the cell ends) and every endpoint's
  latency estimate at the cell's end (the sidecar's admin ``ListEndpoints``). Expected shape:
  round_robin sends the slow endpoint a third of the calls, so its p99 is the added latency or
  more; p2c_ewma and least_request steer away from it.

Rounds interleave the cells (the order rotates every round); each figure is the median over
rounds. Default run: about 3 minutes; ``--check`` exits 1 when a target or the expected shape
is missed.

Usage::

    .venv/bin/python benchmarks/endpoints.py               # prints, updates RESULTS.md
    .venv/bin/python benchmarks/endpoints.py --seconds 0.5 --rounds 1 --slow-rounds 1 --no-write
    .venv/bin/python benchmarks/endpoints.py --only slow --concurrency 16 --no-write
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import platform
import pstats
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import _results  # benchmarks/_results.py (this folder is on sys.path)
import grpc
from proxy import (
    ECHO_ARGS,
    ROOT,
    Cell,
    Processes,
    Target,
    median_cell,
    run_cell,
    thread_cpu_s,
)

from sidecar.balancer import Balancer, BalancerSettings, OutlierSettings, Policy
from sidecar.proxy.admin_endpoints import endpoint_rows
from sidecar.v1 import admin_pb2, admin_pb2_grpc

SECTION = "endpoints"
RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
NO_TRACING = {"OTEL_SDK_DISABLED": "true"}
TARGET_CPU_RATIO = 1.05
CPU_CONCURRENCIES = (1, 64)
ONE, THREE = "address: a", "endpoints: [a, b, c], p2c_ewma"
AGAIN = "address: a (A/A control)"  # a second, identical 1-endpoint sidecar: the noise floor
CPU_CONFIGS = (ONE, THREE, AGAIN)
POLICIES = ("p2c_ewma", "least_request", "round_robin")
SLOW_METHOD = "/sidecar.test.Echo/Unary"  # described by the test upstream's reflection
DEFAULT_SECONDS, DEFAULT_ROUNDS = 1.5, 8
BALANCER_CALLS, BALANCER_ROUNDS = 100_000, 5
CPU_WARMUP_S = 0.25  # the sidecars stay up between cells: only the client's channel is new
PROFILE_ROUNDS = 2
PROFILED = Path(__file__).resolve().parent / "_profiled.py"
DEFAULT_SLOW_SECONDS, DEFAULT_SLOW_ROUNDS = 2.5, 3
SLOW_WARMUP_S = 0.5  # enough for the balancers to see the slow endpoint again (peak EWMA)
DEFAULT_CONCURRENCIES, DEFAULT_DELAY_MS = "4,16", 50.0


def _rotated(items: Sequence[str], round_index: int) -> list[str]:
    """``items`` starting at ``round_index``: over len(items) rounds each cell runs in every
    position, so drift in the machine's load does not favour one."""
    k = round_index % len(items)
    return [*items[k:], *items[:k]]


def _log(cell: Cell, extra: str = "") -> None:
    print(f"{cell.target:32} c={cell.concurrency:<3} {cell.throughput:8,.0f}/s "
          f"p50 {cell.p50_ms:7.3f} ms p99 {cell.p99_ms:7.3f} ms "
          f"cpu {cell.cpu_us_per_call:4.0f} us/call{extra}", flush=True)


# --- part 1: proxy CPU per call, 3 endpoints vs 1 ----------------------------------------------


def _cpu_upstream(name: str, echoes: Sequence[str]) -> dict[str, Any]:
    """The ``upstreams`` config of one CPU config."""
    if name == THREE:
        return {"echo": {"endpoints": list(echoes), "balancer": "p2c_ewma",
                         "routes": ["/bench."]}}
    return {"echo": {"address": echoes[0], "routes": ["/bench."]}}


@dataclass
class CpuRun:
    """Every round's cell of each (config, concurrency), and where its CPU went."""

    cells: dict[tuple[str, int], list[Cell]] = field(default_factory=dict)
    threads: dict[tuple[str, int], list[tuple[float, float]]] = field(default_factory=dict)
    """Per round: CPU µs/call of the main thread (Python: the asyncio loop, the sidecar, grpc's
    Cython layer) and of all other threads (grpc core's event engine: HTTP/2 and sockets)."""


def _cpu_cell(procs: Processes, name: str, concurrency: int, seconds: float
              ) -> tuple[Cell, tuple[float, float]]:
    pid = procs.pids[name]
    before: dict[int, float] = {}
    cell = run_cell(procs, Target(name, "sidecar"), concurrency, seconds,
                    on_start=lambda: before.update(thread_cpu_s(pid)), warmup_s=CPU_WARMUP_S)
    after = thread_cpu_s(pid)
    used = {tid: cpu - before.get(tid, 0.0) for tid, cpu in after.items()}
    main = used.pop(pid, 0.0)
    per_call = 1e6 / cell.calls if cell.calls else float("nan")
    return cell, (main * per_call, sum(used.values()) * per_call)


def run_cpu(workdir: Path, seconds: float, rounds: int) -> CpuRun:
    """Every round: each (config, concurrency) cell once, the configs' order rotating."""
    procs = Processes()
    try:
        echoes = [f"127.0.0.1:{procs.start(f'echo {n}', ECHO_ARGS)}" for n in "abc"]
        for name in CPU_CONFIGS:
            procs.start_sidecar(name, workdir, _cpu_upstream(name, echoes), env=NO_TRACING)
        time.sleep(1.0)  # let the sidecars learn shapes from reflection
        run = CpuRun()
        for round_index in range(rounds):
            for concurrency in CPU_CONCURRENCIES:
                for name in _rotated(CPU_CONFIGS, round_index):
                    cell, threads = _cpu_cell(procs, name, concurrency, seconds)
                    run.cells.setdefault((name, concurrency), []).append(cell)
                    run.threads.setdefault((name, concurrency), []).append(threads)
                    _log(cell, f"  main thread {threads[0]:4.0f} us/call, "
                               f"other threads {threads[1]:4.0f}")
        return run
    finally:
        procs.close()


# The profile of the proxy process, run when the CPU target is missed: both configs again, in
# fresh sidecars under cProfile (benchmarks/_profiled.py: only while cells are measured; it
# sees the main thread: the asyncio loop and all Python).


@dataclass(frozen=True)
class Profile:
    calls: int  # calls the balancer started (one per forwarded call)
    loop_s: float  # asyncio loop work: _run_once's cumulative time minus its idle select()
    balancer_s: float  # Balancer.pick + start + finish, cumulative
    own_s: dict[str, float]  # each function's own time


def _profile(path: Path) -> Profile:
    calls, run_once, select, balancer = 0, 0.0, 0.0, 0.0
    own: dict[str, float] = {}
    stats: dict[tuple[str, int, str], tuple[int, int, float, float, object]] = \
        pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    for (file, line, function), (_, ncalls, tottime, cumtime, _) in stats.items():
        own[f"{Path(file).name}:{line}({function})"] = tottime
        if file.endswith("asyncio/base_events.py") and function == "_run_once":
            run_once += cumtime
        elif file.endswith("selectors.py") and function == "select":
            select += cumtime
        elif file.endswith("sidecar/balancer/_balancer.py") and \
                function in ("pick", "start", "finish"):
            balancer += cumtime
            if function == "start":
                calls += ncalls
    return Profile(calls, run_once - select, balancer, own)


def run_profile(workdir: Path, concurrency: int, seconds: float) -> dict[str, Profile]:
    """Both configs in fresh sidecars under ``_profiled.py`` (cProfile on the main thread's
    CPU time, only while a cell is measured) at ``concurrency``; their profiles."""
    paths = {name: workdir / f"profile-{i}-c{concurrency}.prof"
             for i, name in enumerate((ONE, THREE))}
    procs = Processes()
    try:
        echoes = [f"127.0.0.1:{procs.start(f'echo {n}', ECHO_ARGS)}" for n in "abc"]
        for name, path in paths.items():
            procs.start_sidecar(name, workdir, _cpu_upstream(name, echoes), env=NO_TRACING,
                                launcher=[sys.executable, str(PROFILED), str(path)])
        time.sleep(1.0)
        for round_index in range(PROFILE_ROUNDS):
            for name in _rotated((ONE, THREE), round_index):
                pid = procs.pids[name]
                cell = run_cell(procs, Target(name, "sidecar"), concurrency, seconds,
                                on_start=functools.partial(os.kill, pid, signal.SIGUSR1),
                                warmup_s=CPU_WARMUP_S)
                os.kill(pid, signal.SIGUSR2)
                _log(cell, "  (under cProfile)")
    finally:
        procs.close()  # SIGTERM: each sidecar exits and writes its profile
    return {name: _profile(path) for name, path in paths.items() if path.exists()}


def profile_report(profiles: dict[str, Profile], concurrency: int, why: str) -> list[str]:
    if set(profiles) != {ONE, THREE} or not all(p.calls for p in profiles.values()):
        return ["", "Profile: a profiled sidecar wrote no profile (it did not exit cleanly)."]
    one, three = profiles[ONE], profiles[THREE]

    def us(profile: Profile, seconds: float) -> str:
        return f"{seconds / profile.calls * 1e6:.0f} µs"

    diffs = sorted(((three.own_s.get(f, 0.0) / three.calls - one.own_s.get(f, 0.0) / one.calls)
                    * 1e6, f) for f in set(one.own_s) | set(three.own_s)
                   if "epoll" not in f and "select" not in f)
    top = ", ".join(f"`{f}` {d:+.1f} µs" for d, f in reversed(diffs[-3:]))
    return ["", f"Where the time goes (run because {why}; concurrency "
                f"{concurrency}): both configs again in fresh sidecars under cProfile, "
                f"profiled only while cells are measured ({one.calls:,} and {three.calls:,} "
                f"calls; cProfile slows the process: compare the two, not with the table). "
                f"asyncio loop work per call "
                f"(`_run_once` minus its idle `select`): {us(one, one.loop_s)} with 1 endpoint, "
                f"{us(three, three.loop_s)} with 3; the balancer (pick + start + finish): "
                f"{us(one, one.balancer_s)} vs {us(three, three.balancer_s)}; largest own-time "
                f"increases per call with 3 endpoints: {top}. Other threads (grpc core, not seen "
                f"by cProfile): the table's last column."]


def balancer_ns_per_call(endpoints: int, policy: Policy, calls: int) -> float:
    """The balancer's own work for one call (pick, start, finish), in process: ns per call."""
    balancer: Balancer[None] = Balancer("bench", BalancerSettings(policy=policy),
                                        OutlierSettings())
    balancer.update_endpoints({f"127.0.0.1:{5000 + n}": None for n in range(endpoints)},
                              "endpoints")
    pick, start, finish = balancer.pick, balancer.start, balancer.finish
    began = time.perf_counter()
    for _ in range(calls):
        endpoint = pick()
        assert endpoint is not None
        finish(endpoint, start(endpoint), False)
    return (time.perf_counter() - began) / calls * 1e9


def run_balancer(rounds: int, calls: int = BALANCER_CALLS) -> dict[int, list[float]]:
    """ns/call with 1 and with 3 endpoints (p2c_ewma), interleaved rounds."""
    costs: dict[int, list[float]] = {1: [], 3: []}
    for round_index in range(rounds):
        for n in (1, 3) if round_index % 2 == 0 else (3, 1):
            costs[n].append(balancer_ns_per_call(n, "p2c_ewma", calls))
    return costs


def cpu_ratios(cells: dict[tuple[str, int], list[Cell]], name: str, concurrency: int
               ) -> list[float]:
    """Per round: ``name``'s sidecar CPU µs/call over the 1-endpoint one's."""
    return [cell.cpu_us_per_call / one.cpu_us_per_call for cell, one in
            zip(cells[(name, concurrency)], cells[(ONE, concurrency)], strict=True)]


def cpu_report(run: CpuRun, seconds: float, rounds: int,
               balancer: dict[int, list[float]] | None = None
               ) -> tuple[list[str], dict[int, float]]:
    """The section's CPU part, and each concurrency whose target was missed, with its ratio."""
    cells = run.cells
    lines = [
        f"### Proxy CPU per call: 3 endpoints vs 1 (target: within {TARGET_CPU_RATIO - 1:.0%})",
        "",
        f"Three echo servers (`benchmarks/proxy.py`'s); three sidecars started through the CLI "
        f"(tracing off, metrics on): upstream `{ONE}`, `{THREE}`, and a second `{ONE}` as an "
        f"A/A control (identical to the first: how far apart two equal configs measure is "
        f"the noise floor of this run). Unary calls, 100-byte payload, {seconds:g} s per cell "
        f"after a {CPU_WARMUP_S:g} s warm-up, {rounds} rounds, the order rotating every round. "
        f"Rows: the median round by throughput; `CPU vs address: a`: median over rounds of "
        f"each round's ratio to the `{ONE}` cell of the same round; main / other threads: "
        f"that round's CPU per call of the sidecar's main thread (Python: the asyncio loop, "
        f"the sidecar, grpc's Cython layer) and of its other threads (grpc core's event "
        f"engine: HTTP/2 and sockets), from /proc.",
        "",
        f"| upstream | concurrency | calls/s | p50 ms | p99 ms | CPU µs/call "
        f"| CPU vs `{ONE}` | main / other threads µs/call | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts: list[str] = []
    missed: dict[int, float] = {}
    for concurrency in CPU_CONCURRENCIES:
        ratios = {name: statistics.median(cpu_ratios(cells, name, concurrency))
                  for name in CPU_CONFIGS}
        for name in CPU_CONFIGS:
            rows = cells[(name, concurrency)]
            cell = median_cell(rows)
            main, other = run.threads[(name, concurrency)][rows.index(cell)]
            vs = f"**{ratios[name]:.3f}x**" if name == THREE else f"{ratios[name]:.3f}x"
            lines.append(f"| `{name}` | {concurrency} | {cell.throughput:,.0f} "
                         f"| {cell.p50_ms:.3f} | {cell.p99_ms:.3f} "
                         f"| {cell.cpu_us_per_call:.0f} | {vs} | {main:.0f} / {other:.0f} "
                         f"| {sum(c.errors for c in rows)} |")
        ratio, control = ratios[THREE], ratios[AGAIN]
        met = ratio <= TARGET_CPU_RATIO
        if not met:
            missed[concurrency] = ratio
        spread = sorted(cpu_ratios(cells, AGAIN, concurrency))
        verdicts.append(
            f"concurrency {concurrency}: **{ratio - 1:+.1%}** ({'met' if met else 'missed'}; "
            f"per round: {', '.join(f'{r:.2f}' for r in cpu_ratios(cells, THREE, concurrency))}"
            f"); A/A control {control - 1:+.1%} (per round {spread[0]:.2f} to {spread[-1]:.2f})")
    lines += ["", f"3 endpoints vs 1, CPU µs/call of the proxy (target <= "
                  f"{TARGET_CPU_RATIO - 1:+.0%}): " + "; ".join(verdicts) + ". A difference "
                  "no larger than the A/A control's is not resolved by this run."]
    if balancer:
        one, three = (statistics.median(balancer[n]) / 1000 for n in (1, 3))
        shares = ", ".join(
            f"{(three - one) / median_cell(cells[(ONE, c)]).cpu_us_per_call:.2%} at "
            f"concurrency {c}" for c in CPU_CONCURRENCIES)
        lines += ["", f"Where a difference can come from, measured apart: the balancer's own "
                      f"work per call (`sidecar.balancer.Balancer` pick + start + finish, "
                      f"p2c_ewma, in this process, median of {len(balancer[1])} interleaved "
                      f"rounds of {BALANCER_CALLS:,} calls) is {one:.2f} µs with 1 endpoint "
                      f"(no choice to make) and {three:.2f} µs with 3 (two random draws, two "
                      f"cost reads): {three - one:+.2f} µs per call, i.e. {shares} of the "
                      f"1-endpoint proxy's CPU per call. The rest of a 3-endpoint proxy's "
                      f"extra work, if any, is in its three HTTP/2 connections instead of one."]
    return lines, missed


# --- part 2: one of three endpoints +50 ms -------------------------------------------------------


@dataclass(frozen=True)
class SlowCell:
    cell: Cell
    slow_calls: int
    upstream_calls: int
    ewma_ms: tuple[float, ...]  # the balancer's latency estimate per endpoint, at the cell's end

    @property
    def slow_share(self) -> float:
        return self.slow_calls / self.upstream_calls if self.upstream_calls else float("nan")


class UpstreamProcess(Protocol):
    """What this benchmark uses of ``tests.support.upstream.UpstreamProcess`` (that module is
    not type-checked, so it is loaded by name, not imported for mypy to follow)."""

    address: str

    def configure(self, scope: str = "*", **faults: Any) -> None: ...

    def calls(self, method: str) -> int: ...

    def close(self) -> None: ...


def _start_upstream(workdir: Path) -> UpstreamProcess:
    """A ``tests/support/upstream.py`` process (its control client sets the delay and reads
    the call counters); the log goes to ``workdir``."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    module = importlib.import_module("tests.support.upstream")
    upstream: UpstreamProcess = module.UpstreamProcess(workdir)
    return upstream


def _slow_cell(procs: Processes, target: Target, upstreams: Sequence[UpstreamProcess],
               concurrency: int, seconds: float) -> SlowCell:
    """``upstreams[-1]`` is the slow one; counts are taken after the warm-up."""
    before: list[int] = []

    def snapshot() -> None:
        before[:] = [u.calls(SLOW_METHOD) for u in upstreams]

    cell = run_cell(procs, target, concurrency, seconds, on_start=snapshot,
                    warmup_s=SLOW_WARMUP_S)
    counts = [u.calls(SLOW_METHOD) - b for u, b in zip(upstreams, before, strict=True)]
    estimates = ewma_ms(procs.admin[target.name])
    return SlowCell(cell, counts[-1], sum(counts),
                    tuple(estimates.get(u.address, float("nan")) for u in upstreams))


def ewma_ms(admin: str) -> dict[str, float]:
    """Each endpoint's latency estimate, as the sidecar's admin ``ListEndpoints`` reports it."""
    with grpc.insecure_channel(admin) as channel:
        stub = admin_pb2_grpc.SidecarAdminStub(channel)  # type: ignore[no-untyped-call]
        response = stub.ListEndpoints(admin_pb2.ListEndpointsRequest(), timeout=10)
    return {row["endpoint"]: float(row["ewma_ms"]) for row in endpoint_rows(response)
            if row["endpoint"] is not None}


def run_slow(workdir: Path, seconds: float, rounds: int, concurrencies: Sequence[int],
             delay_ms: float) -> dict[tuple[str, int], list[SlowCell]]:
    """Every round: each (balancer, concurrency) cell once, the balancers' order rotating; the
    cells, by key."""
    upstreams: list[UpstreamProcess] = []
    procs = Processes()
    try:
        for _ in range(3):
            upstreams.append(_start_upstream(workdir))
        upstreams[-1].configure("*", delay_ms=delay_ms)
        addresses = [u.address for u in upstreams]
        for policy in POLICIES:
            procs.start_sidecar(policy, workdir, {"svc": {
                "endpoints": addresses, "balancer": policy, "routes": ["/sidecar.test."]}},
                env=NO_TRACING)
        time.sleep(1.0)  # let the sidecars learn shapes from reflection
        cells: dict[tuple[str, int], list[SlowCell]] = {}
        for round_index in range(rounds):
            for concurrency in concurrencies:
                for policy in _rotated(POLICIES, round_index):
                    slow = _slow_cell(procs, Target(policy, "sidecar", method=SLOW_METHOD),
                                      upstreams, concurrency, seconds)
                    cells.setdefault((policy, concurrency), []).append(slow)
                    _log(slow.cell, f"  slow endpoint: {slow.slow_share:.1%} of "
                                    f"{slow.upstream_calls:,} calls")
        return cells
    finally:
        procs.close()
        for upstream in upstreams:
            upstream.close()


def _median(cells: Sequence[SlowCell], value: Callable[[SlowCell], float]) -> float:
    return statistics.median(value(c) for c in cells)


def _vs(rows: Sequence[SlowCell], base: Sequence[SlowCell] | None,
        value: Callable[[Cell], float]) -> str:
    """Median over rounds of this round's value over the base's value in the same round."""
    if base is None:
        return "-"
    ratio = statistics.median(value(c.cell) / value(b.cell)
                              for c, b in zip(rows, base, strict=True))
    return f"{ratio:.2f}x"


def _ewma_column(rows: Sequence[SlowCell]) -> str:
    """Per endpoint, the median over rounds of its estimate at the cell's end."""
    per_endpoint = zip(*(c.ewma_ms for c in rows), strict=True)
    return " / ".join(f"{statistics.median(values):.1f}" for values in per_endpoint)


def slow_report(cells: dict[tuple[str, int], list[SlowCell]], seconds: float, rounds: int,
                concurrencies: Sequence[int], delay_ms: float) -> tuple[list[str], bool]:
    lines = [
        f"### One of three endpoints +{delay_ms:g} ms",
        "",
        f"Three upstreams (`tests/support/upstream.py`), one with {delay_ms:g} ms added to "
        f"every call; one sidecar per balancer over the same three `endpoints` (outlier "
        f"detection at its defaults: a slow endpoint is not failing, so none is ejected); "
        f"unary calls, {seconds:g} s per cell after a {SLOW_WARMUP_S:g} s warm-up, {rounds} "
        f"interleaved rounds (the balancers' order rotates); each figure is the median over "
        f"rounds, `vs round_robin` the median of per-round ratios. Slow share: the calls the "
        f"slow upstream answered over all three upstreams' calls in the cell (from their own "
        f"counters; a fair share is 33%). EWMA: each endpoint's latency estimate at the cell's "
        f"end, as the sidecar's admin `ListEndpoints` reports it (median over rounds); "
        f"p2c_ewma's cost is EWMA x (in flight + 1), so the slow endpoint is avoided only while "
        f"the fast ones' cost stays below its own.",
        "",
        "| balancer | callers | calls/s | calls/s vs round_robin | p50 ms | p99 ms "
        "| p99 vs round_robin | slow endpoint's share | EWMA ms fast / fast / slow | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    checks = []
    ok = True
    for concurrency in concurrencies:
        rr = cells.get(("round_robin", concurrency))
        for policy in POLICIES:
            rows = cells.get((policy, concurrency))
            if rows is None:
                continue
            lines.append(
                f"| `{policy}` | {concurrency} "
                f"| {_median(rows, lambda c: c.cell.throughput):,.0f} "
                f"| {_vs(rows, rr, lambda c: c.throughput)} "
                f"| {_median(rows, lambda c: c.cell.p50_ms):.3f} "
                f"| {_median(rows, lambda c: c.cell.p99_ms):.3f} "
                f"| {_vs(rows, rr, lambda c: c.p99_ms)} "
                f"| {_median(rows, lambda c: c.slow_share):.1%} "
                f"| {_ewma_column(rows)} "
                f"| {sum(c.cell.errors for c in rows)} |")
            p99 = _median(rows, lambda c: c.cell.p99_ms)
            expected = p99 >= delay_ms if policy == "round_robin" else p99 < delay_ms
            ok = ok and expected
            checks.append(f"`{policy}` at {concurrency} callers p99 "
                          f"{'>=' if policy == 'round_robin' else '<'} {delay_ms:g} ms: "
                          f"{'yes' if expected else '**no**'}")
    per_round = "; ".join(
        f"`{policy}` at {concurrency}: " + ", ".join(f"{c.cell.p99_ms:.1f}" for c in rows)
        for (policy, concurrency), rows in sorted(cells.items(), key=lambda kv: kv[0][1]))
    lines += ["", f"p99 per round (ms): {per_round}.",
              "", "Expected shape (round_robin waits for the slow endpoint at p99, the others "
                  "steer away from it): " + "; ".join(checks) + "."]
    return lines, ok


# --- the run --------------------------------------------------------------------------------------


def write_section(path: Path, body: str) -> None:
    """Replace this benchmark's section of RESULTS.md, keeping every other section."""
    _results.write_section(path, SECTION, "Endpoints per upstream (`benchmarks/endpoints.py`)",
                           body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS,
                        help="per CPU cell")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="CPU rounds")
    parser.add_argument("--slow-seconds", type=float, default=DEFAULT_SLOW_SECONDS,
                        help="per slow-endpoint cell")
    parser.add_argument("--slow-rounds", type=int, default=DEFAULT_SLOW_ROUNDS)
    parser.add_argument("--concurrency", default=DEFAULT_CONCURRENCIES,
                        help="comma-separated numbers of callers in the slow-endpoint part")
    parser.add_argument("--delay-ms", type=float, default=DEFAULT_DELAY_MS,
                        help="added to every call of the slow endpoint")
    parser.add_argument("--only", choices=("cpu", "slow"), help="run one part")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    parser.add_argument("--results", type=Path, default=RESULTS_PATH)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--profile", action="store_true",
                        help="profile the proxies even when the CPU target is met")
    args = parser.parse_args(argv)
    try:
        concurrencies = [int(n) for n in args.concurrency.split(",")]
    except ValueError:
        parser.error(f"--concurrency: numbers separated by commas, got {args.concurrency!r}")
    if min(args.seconds, args.slow_seconds, args.delay_ms) <= 0 \
            or min(args.rounds, args.slow_rounds, *concurrencies) < 1:
        parser.error("--seconds, --slow-seconds, --delay-ms must be > 0; "
                     "--rounds, --slow-rounds, --concurrency >= 1")
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    lines: list[str] = []
    ok = True
    with tempfile.TemporaryDirectory() as workdir:
        if args.only in (None, "cpu"):
            balancer = run_balancer(BALANCER_ROUNDS)
            cpu_lines, missed = cpu_report(
                run_cpu(Path(workdir), args.seconds, args.rounds), args.seconds, args.rounds,
                balancer)
            lines += ["", *cpu_lines]
            ok = ok and not missed
            if missed or args.profile:
                worst = max(missed, key=missed.__getitem__) if missed else CPU_CONCURRENCIES[0]
                lines += profile_report(run_profile(Path(workdir), worst, args.seconds), worst,
                                        "a target was missed" if missed else "--profile")
        if args.only in (None, "slow"):
            slow_lines, slow_ok = slow_report(
                run_slow(Path(workdir), args.slow_seconds, args.slow_rounds, concurrencies,
                         args.delay_ms),
                args.slow_seconds, args.slow_rounds, concurrencies, args.delay_ms)
            lines += ["", *slow_lines]
            ok = ok and slow_ok
    command = " ".join([".venv/bin/python", "benchmarks/endpoints.py",
                        *(sys.argv[1:] if argv is None else argv)])
    header = (
        f"Produced by `{command}` ({time.monotonic() - started:.0f} s). Client, servers and "
        f"sidecars each in their own process on one machine ({os.cpu_count()} cores shared "
        f"with other work; Python {platform.python_version()}, grpcio {grpc.__version__}; "
        f"measured {time.strftime('%Y-%m-%d')}). Load average before the run: "
        f"{load_before:.1f}, after: {os.getloadavg()[0]:.1f} (absolute times are noise on a "
        f"shared machine: compare rows of one run, judge ratios).")
    body = "\n".join([header, *lines])
    print(body)
    if not args.no_write and args.only is None:
        write_section(args.results, body)
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
