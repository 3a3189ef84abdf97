"""The sidecar against the C proxies: nginx and HAProxy in the same run as direct
calls, the naive Python pass-through and the sidecar, with a load generator that is not the
bottleneck.

One command, every server in its own process on 127.0.0.1:

- load: the Go load generator and echo server of ``benchmarks/go`` (``benchmarks/_loadgen.py``
  builds them offline from Debian's ``golang-go`` and ``golang-google-grpc-dev``); without Go,
  ``benchmarks/proxy.py``'s Python client and echo server, said in the output (and then no
  fixed-rate or streaming rows: the Python client is closed-loop unary only);
- ``direct``: the echo server itself; ``naive``: ``proxy.py``'s raw-bytes unary pass-through;
- ``nginx`` (``grpc_pass``, upstream keepalive pool, one worker) and ``haproxy`` (``proto h2``
  both sides, one thread), configs from ``benchmarks/_anchors.py``;
- ``sidecar``: ``sidecar proxy`` through its CLI with its default breaker and metrics, one
  endpoint, tracing at 1% exported over OTLP/gRPC to a real receiver process; ``sidecar, 3
  endpoints + retries``: the same over three echo servers (p2c_ewma) with ``retry`` configured
  (no call fails, so none is retried); ``sidecar, 100 upstreams``: one-endpoint routing with
  99 more upstreams configured, for memory (at c=64 only); ``sidecar (A/A control)``: a second
  ``sidecar`` (at c=16 only), whose distance from the first is the noise floor of the ratios.

Loads: 100-byte unary calls at concurrency 1, 16 and 64 (closed loop), at a fixed 1,000 calls/s
(open loop: latency without queueing), and server-streaming calls (one request, 10 responses)
at concurrency 16. Each cell: a warm-up, then ``--seconds`` of calls. CPU µs/call: user+system
CPU of the proxy's process(es) (nginx: master and worker; ``direct``: the echo server) over the
measured part / calls. Rounds interleave the cells (the order rotates every round); figures are
medians over rounds, targets medians of per-round pairs (``benchmarks/_c_proxies_report.py``).
RSS idle (before any call), under c=64 and after each round, and the load average before and
after, are in the output.

Usage::

    .venv/bin/python benchmarks/c_proxies.py        # ~10 min; prints, updates RESULTS.md
    .venv/bin/python benchmarks/c_proxies.py --seconds 1 --rounds 1 --no-write
    .venv/bin/python benchmarks/c_proxies.py --only direct,nginx,sidecar --no-write
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _anchors
import _c_proxies_report as rep
import _loadgen
import _results
import grpc
from _harness import Processes, load_average, rss_kb, thread_cpu_s
from _loadgen import Load, Sample
from proxy import ECHO_ARGS

SECTION = "c_proxies"
RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
UNARY, STREAM_METHOD = "/bench.Echo/Unary", "/bench.Echo/Stream"
LOADS = (Load(rep.C1, 1), Load(rep.C16, 16), Load(rep.C64, 64), Load(rep.RATE, rate=1000.0),
         Load(rep.STREAM, 16, stream=True))
UNARY_LOADS = (rep.C1, rep.C16, rep.C64, rep.RATE)
DEFAULT_SECONDS, DEFAULT_ROUNDS, DEFAULT_WARMUP_S = 3.0, 5, 0.5
TRACING_RATIO = 0.01
EXTRA_UPSTREAMS = 99
LAST_RUN = _loadgen.CACHE / "c_proxies-last-run.json"
"""The last full run's measurements (git ignores the folder)."""


@dataclass(frozen=True)
class Target:
    name: str
    loads: tuple[str, ...]


TARGETS = (
    Target(rep.DIRECT, (*UNARY_LOADS, rep.STREAM)),
    Target(rep.NAIVE, UNARY_LOADS),  # unary only: the cheapest pass-through grpc Python allows
    Target(rep.NGINX, (*UNARY_LOADS, rep.STREAM)),
    Target(rep.HAPROXY, (*UNARY_LOADS, rep.STREAM)),
    Target(rep.SIDECAR, (*UNARY_LOADS, rep.STREAM)),
    Target(rep.SIDECAR_3, UNARY_LOADS),
    Target(rep.SIDECAR_100, (rep.C64,)),
    Target(rep.SIDECAR_AA, (rep.C16,)),
)


def sidecar_upstreams(name: str, echoes: Sequence[str]) -> dict[str, Any]:
    """The ``upstreams`` config of each sidecar target."""
    if name == rep.SIDECAR_3:
        return {"echo": {"endpoints": list(echoes), "balancer": "p2c_ewma", "routes": ["/bench."],
                         "retry": {"max_attempts": 3, "methods": ["/bench."]}}}
    upstreams: dict[str, Any] = {"echo": {"address": echoes[0], "routes": ["/bench.Echo/"]}}
    if name == rep.SIDECAR_100:
        for i in range(1, EXTRA_UPSTREAMS + 1):
            upstreams[f"u{i:03}"] = {"address": echoes[i % len(echoes)],
                                     "routes": [f"/bench.U{i:03}/"]}
    return upstreams


class Run:
    """Every server of one run: ``watch[name]`` are the pids a cell measures, ``idle_kb`` their
    RSS once started, before any call."""

    def __init__(self, targets: Sequence[Target], workdir: Path, binary: Path | None) -> None:
        self.procs = Processes()
        self.binary = binary
        self.watch: dict[str, list[int]] = {}
        self.idle_kb: dict[str, int] = {}
        try:
            self._start(targets, workdir)
        except BaseException:
            self.procs.close()
            raise

    def _start(self, targets: Sequence[Target], workdir: Path) -> None:
        procs, names = self.procs, {t.name for t in targets}
        echo_args = [str(self.binary), "echo"] if self.binary else ECHO_ARGS
        echo_env = _loadgen.GO_ENV if self.binary else None
        echoes = [f"127.0.0.1:{procs.start(f'echo {n}', echo_args, env=echo_env)}"
                  for n in "abc"]
        procs.ports[rep.DIRECT] = int(echoes[0].rsplit(":", 1)[1])
        self.watch[rep.DIRECT] = [procs.pids["echo a"]]
        if rep.NAIVE in names:
            procs.ports[rep.NAIVE] = procs.start(rep.NAIVE, [
                sys.executable, ECHO_ARGS[1], "--role", "naive_unary", "--target", echoes[0]])
            self.watch[rep.NAIVE] = [procs.pids[rep.NAIVE]]
        if rep.NGINX in names:
            self.watch[rep.NGINX] = _anchors.start_nginx(procs, rep.NGINX, workdir, echoes[0])
        if rep.HAPROXY in names:
            self.watch[rep.HAPROXY] = _anchors.start_haproxy(procs, rep.HAPROXY, workdir,
                                                             echoes[0])
        sidecars = [n for n in (rep.SIDECAR, rep.SIDECAR_3, rep.SIDECAR_100, rep.SIDECAR_AA)
                    if n in names]
        if sidecars:
            otlp = procs.start("otlp receiver", [sys.executable, "-m",
                                                 "tests.support.otlp_receiver", "--count-only"])
            tracing = {"tracing": {"otlp_endpoint": f"http://127.0.0.1:{otlp}",
                                   "sample_ratio": TRACING_RATIO}}
            for name in sidecars:
                procs.start_sidecar(name, workdir, sidecar_upstreams(name, echoes), tracing)
                self.watch[name] = [procs.pids[name]]
        time.sleep(2.0)  # the sidecars learn shapes from reflection; everything settles
        self.idle_kb = {name: sum(rss_kb(p) for p in pids) for name, pids in self.watch.items()
                        if name != rep.DIRECT}

    def measure(self, name: str, load: Load, seconds: float, warmup_s: float
                ) -> tuple[Sample | None, float | None]:
        """One cell; and the share of the proxy's CPU its main thread used (sidecars)."""
        method = STREAM_METHOD if load.stream else UNARY
        watch = self.watch[name]
        before = thread_cpu_s(watch[0]) if name.startswith(rep.SIDECAR) else None
        if self.binary is not None:
            sample: Sample | None = _loadgen.run_go(self.binary, name, self.procs.ports[name],
                                                    method, load, seconds, warmup_s, watch)
        else:
            sample = _loadgen.run_python(self.procs, name, method, load, seconds, warmup_s, watch)
        share = None
        if before is not None:
            after = thread_cpu_s(watch[0])
            used = {tid: cpu - before.get(tid, 0.0) for tid, cpu in after.items()}
            total = sum(used.values())
            share = used.get(watch[0], 0.0) / total if total > 0 else None
        return sample, share

    def rss_kb(self) -> dict[str, int]:
        return {name: sum(rss_kb(p) for p in pids) for name, pids in self.watch.items()
                if name != rep.DIRECT}

    def close(self) -> None:
        self.procs.close()


def _rotated(items: Sequence[str], round_index: int) -> list[str]:
    k = round_index % len(items) if items else 0
    return [*items[k:], *items[:k]]


def _version(args: list[str]) -> str:
    if shutil.which(args[0]) is None:
        return f"no {args[0]}"
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    return (done.stdout + done.stderr).strip().splitlines()[0]


def versions() -> str:
    """The machine and the software a run measured, for the section's first paragraph."""
    return (f"{platform.machine()}, {os.cpu_count()} cores; {_version(['nginx', '-v'])}; "
            f"{_version(['haproxy', '-v'])}; {_version(['go', 'version'])}; Python "
            f"{platform.python_version()}, grpcio {grpc.__version__}; measured "
            f"{time.strftime('%Y-%m-%d')}")


@dataclass
class Outcome:
    """What one run measured: everything its section is drawn from. Saved as JSON to
    :data:`LAST_RUN`, so ``--report-only`` can draw the section again without measuring."""

    loadgen: str
    versions: str
    seconds: float
    rounds: int
    load_before: str
    targets: list[str]
    missing: list[str]
    samples: list[Sample] = field(default_factory=list)  # in the order they ran
    idle_kb: dict[str, int] = field(default_factory=dict)
    after_round_kb: dict[str, list[int]] = field(default_factory=dict)
    main_thread_shares: list[float] = field(default_factory=list)  # sidecar, c=16
    load_after: str = ""

    def rounds_data(self) -> rep.Rounds:
        data: rep.Rounds = {}
        for sample in self.samples:
            data.setdefault((sample.target, sample.load), []).append(sample)
        return data

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dataclasses.asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> Outcome:
        raw = json.loads(path.read_text())
        raw["samples"] = [Sample(**sample) for sample in raw["samples"]]
        return cls(**raw)


def render(outcome: Outcome) -> tuple[str, list[rep.Verdict]]:
    """The RESULTS.md section of a run, and its targets' verdicts."""
    data, names = outcome.rounds_data(), outcome.targets
    left_out = (f" Not installed, so left out: {', '.join(outcome.missing)}."
                if outcome.missing else "")
    shares = sorted(outcome.main_thread_shares)
    found = rep.verdicts(data)
    lines = [
        f"Load: **{outcome.loadgen}**. 100-byte payloads; {outcome.seconds:g} s per cell after "
        f"a warm-up, {outcome.rounds} rounds interleaved (each figure the median over rounds). "
        f"Client, echo servers and each proxy in their own process on one machine "
        f"({outcome.versions}). CPU µs/call: user+system CPU of the proxy's process(es) over "
        f"the measured part / calls (`direct`: the echo server's). Load average (1/5/15 min) "
        f"before the run {outcome.load_before}, after {outcome.load_after}: other work shares "
        f"the machine, so compare rows of one run, not runs.{left_out}",
        "", *rep.table(data, names, [load.label for load in LOADS]), "",
        "Memory (RSS of the proxy's process(es); the 100-upstream sidecar runs at c=64 only):",
        "", *rep.memory_table(data, outcome.idle_kb, outcome.after_round_kb, names), "",
        "Targets, the sidecar at the Python floor (median over rounds of each round's pair):", "",
        *[f"- {v.text}: {'met' if v.met else 'missed'}" for v in found],
        *([floor] if (floor := rep.noise_floor(data)) else []),
        *rep.explain(data, names, shares[len(shares) // 2] if shares else None),
    ]
    return "\n".join(lines), found


def measure_all(outcome: Outcome, targets: Sequence[Target], binary: Path | None,
                warmup_s: float) -> None:
    """Every round of every cell, into ``outcome``."""
    with tempfile.TemporaryDirectory() as workdir:
        run = Run(targets, Path(workdir), binary)
        try:
            outcome.idle_kb = run.idle_kb
            for round_index in range(outcome.rounds):
                for load in LOADS:
                    names = [t.name for t in targets if load.label in t.loads]
                    for name in _rotated(names, round_index):
                        sample, share = run.measure(name, load, outcome.seconds, warmup_s)
                        if sample is None:
                            continue
                        outcome.samples.append(sample)
                        if share is not None and name == rep.SIDECAR and load.label == rep.C16:
                            outcome.main_thread_shares.append(share)
                        print(f"r{round_index + 1} {load.label:11} {name:31} "
                              f"{sample.throughput:8,.0f}/s p50 {sample.p50_ms:7.3f} "
                              f"p99 {sample.p99_ms:7.3f} ms cpu {sample.cpu_us_per_call:5.0f} "
                              f"us/call rss {sample.rss_kb / 1024:5.1f} MB "
                              f"err {sample.errors}", flush=True)
                for name, kb in run.rss_kb().items():
                    outcome.after_round_kb.setdefault(name, []).append(kb)
        finally:
            run.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="per cell")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--warmup", type=float, default=DEFAULT_WARMUP_S, help="per cell")
    parser.add_argument("--only", default="", help="comma-separated target names")
    parser.add_argument("--python", action="store_true",
                        help="use the Python client and echo server even if Go is installed")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    parser.add_argument("--results", type=Path, default=RESULTS_PATH)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--report-only", action="store_true",
                        help=f"measure nothing: draw the section again from {LAST_RUN.name}")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rounds < 1 or args.warmup < 0:
        parser.error("--seconds must be > 0, --rounds >= 1, --warmup >= 0")
    if args.report_only:
        outcome = Outcome.load(LAST_RUN)
    else:
        wanted = {name.strip() for name in args.only.split(",") if name.strip()}
        missing = _anchors.missing_anchors()
        targets = [t for t in TARGETS
                   if (not wanted or t.name in wanted) and t.name not in missing]
        binary, why = (None, "--python given") if args.python else _loadgen.build_go()
        loadgen = why if binary else f"Python client and echo server (fallback: {why})"
        print(f"load generator: {loadgen}; anchors missing: {missing or 'none'}", flush=True)
        outcome = Outcome(loadgen, versions(), args.seconds, args.rounds, load_average(),
                          [t.name for t in targets], missing)
        measure_all(outcome, targets, binary, args.warmup)
        outcome.load_after = load_average()
        if not wanted:
            outcome.save(LAST_RUN)
    body, found = render(outcome)
    print(body)
    if not args.no_write and set(outcome.targets) | set(outcome.missing) == {
            t.name for t in TARGETS}:
        _results.write_section(args.results, SECTION,
                               "Against the C proxies (`benchmarks/c_proxies.py`)", body)
    return 1 if args.check and not all(v.met for v in found) else 0


if __name__ == "__main__":
    sys.exit(main())
