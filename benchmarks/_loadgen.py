"""The load of ``benchmarks/c_proxies.py``: the Go load generator and echo server
(``benchmarks/go``), built here from Debian's Go packages, or the Python ones as a fallback.

Why Go: the Python client uses 40-80% of a core and the Python echo server about 200 µs of CPU
per call, more than nginx or HAProxy spend forwarding one, so a throughput figure would mostly
measure them. The Go pair costs a fraction of that, and one process each.

The build is offline: ``GO111MODULE=off GOPATH=/usr/share/gocode`` (Debian's
``golang-google-grpc-dev`` puts grpc-go 1.33 and its dependencies there), nothing downloaded,
into :data:`CACHE` (ignored by git), again only when a source is newer than the binary.

A cell's figures come from the load generator's JSON summary (:func:`parse_summary`): it reads
the proxy's CPU ticks from /proc itself when its warm-up ends and when its measured part ends,
so the CPU per call covers exactly the measured calls.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from _harness import CLK_TCK, Processes, cpu_s, rss_kb

GO_SOURCE = Path(__file__).resolve().parent / "go"
CACHE = GO_SOURCE / ".cache"
BINARY = CACHE / "benchgo"
GOPATH = Path("/usr/share/gocode")
GRPC_SOURCE = GOPATH / "src/google.golang.org/grpc"
GO_ENV = {"GOMAXPROCS": "1"}
"""The Go client and echo server each run on one OS thread at a time: on two shared cores that
cuts their CPU per call by about a third (fewer cross-thread wake-ups) and leaves the other
core to the proxy; one thread still makes or answers 40,000+ calls/s, more than any proxy here
forwards."""
STREAM_MESSAGES = 10
"""Responses per server-streaming call (the Go echo server's ``-stream-messages``)."""


@dataclass(frozen=True)
class Load:
    """How one cell calls: ``concurrency`` closed-loop callers, or ``rate`` calls/s open loop;
    unary, or server-streaming (one request, :data:`STREAM_MESSAGES` responses)."""

    label: str
    concurrency: int = 1
    rate: float = 0.0
    stream: bool = False


@dataclass(frozen=True)
class Sample:
    """One measured cell: the callers' view and the proxy process's CPU and memory."""

    target: str
    load: str
    calls: int
    errors: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    cpu_us_per_call: float  # user+system CPU of the proxy's process(es) / calls
    rss_kb: int  # of the proxy's process(es), at the cell's end
    client_cpu_us_per_call: float = math.nan
    messages: int = 0

    @property
    def throughput(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else math.nan


def build_go() -> tuple[Path | None, str]:
    """The load generator's binary (built when missing or older than its sources), or None
    and why not (then the benchmark falls back to the Python client and echo server)."""
    go = shutil.which("go")
    if go is None:
        return None, "no `go` on PATH (apt-get install -y golang-go golang-google-grpc-dev)"
    if not GRPC_SOURCE.is_dir():
        return None, f"no grpc-go under {GRPC_SOURCE} (apt-get install -y golang-google-grpc-dev)"
    sources = list(GO_SOURCE.glob("*.go"))
    if BINARY.exists() and all(s.stat().st_mtime <= BINARY.stat().st_mtime for s in sources):
        return BINARY, "Go load generator and echo server (cached build)"
    CACHE.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATH),
           "GOCACHE": str(CACHE / "gocache"), "GOFLAGS": "", "GOPROXY": "off"}
    built = subprocess.run([go, "build", "-o", str(BINARY), "."], cwd=GO_SOURCE, env=env,
                           capture_output=True, text=True, check=False)
    if built.returncode != 0:
        return None, f"`go build` failed: {built.stderr.strip()[:300]}"
    return BINARY, "Go load generator and echo server (built now)"


def go_args(binary: Path, port: int, method: str, load: Load, seconds: float, warmup_s: float,
            watch: Sequence[int]) -> list[str]:
    """The command line of one cell's ``benchgo load``."""
    args = [str(binary), "load", "-target", f"127.0.0.1:{port}", "-method", method,
            "-mode", "stream" if load.stream else "unary",
            "-duration", f"{seconds:g}", "-warmup", f"{warmup_s:g}",
            "-watch", ",".join(str(pid) for pid in watch)]
    if load.rate > 0:
        return [*args, "-rate", f"{load.rate:g}"]
    return [*args, "-concurrency", str(load.concurrency)]


def parse_summary(text: str, target: str, load: str, watch: Sequence[int],
                  clk_tck: int = CLK_TCK) -> Sample:
    """A :class:`Sample` from ``benchgo load``'s JSON summary: the CPU and RSS of the
    ``watch`` processes added up (nginx: master and worker), per call."""
    summary = json.loads(text)
    calls = int(summary["calls"])
    watched = summary.get("watched") or {}
    ticks = sum(int(watched.get(str(pid), {}).get("cpu_ticks", 0)) for pid in watch)
    rss = sum(int(watched.get(str(pid), {}).get("rss_kb", 0)) for pid in watch)

    def per_call_us(cpu_ticks: int) -> float:
        return cpu_ticks / clk_tck / calls * 1e6 if calls else math.nan

    return Sample(
        target=target, load=load, calls=calls,
        errors=int(summary["errors"]) + int(summary.get("dropped", 0)),
        seconds=float(summary["seconds"]), p50_ms=float(summary["p50_ms"]),
        p90_ms=float(summary["p90_ms"]), p99_ms=float(summary["p99_ms"]),
        max_ms=float(summary["max_ms"]), cpu_us_per_call=per_call_us(ticks), rss_kb=rss,
        client_cpu_us_per_call=per_call_us(int(summary.get("client_cpu_ticks", 0))),
        messages=int(summary.get("messages", calls)),
    )


def run_go(binary: Path, target: str, port: int, method: str, load: Load, seconds: float,
           warmup_s: float, watch: Sequence[int]) -> Sample:
    """One cell with the Go load generator (a process of its own)."""
    done = subprocess.run(go_args(binary, port, method, load, seconds, warmup_s, watch),
                          capture_output=True, text=True, check=False,
                          env={**os.environ, **GO_ENV},
                          timeout=seconds + warmup_s + 120)
    if done.returncode != 0:
        raise RuntimeError(f"benchgo load against {target} failed: {done.stderr.strip()[:300]}")
    return parse_summary(done.stdout, target, load.label, watch)


def run_python(procs: Processes, target: str, method: str, load: Load, seconds: float,
               warmup_s: float, watch: Sequence[int]) -> Sample | None:
    """One cell with ``benchmarks/proxy.py``'s asyncio client in this process (the fallback
    when Go is missing): closed-loop unary calls only, so None for a fixed-rate or streaming
    cell."""
    import proxy  # the client lives there; imported late: it imports grpc

    if load.rate > 0 or load.stream:
        return None
    before: dict[int, float] = {}
    cell = proxy.run_cell(procs, proxy.Target(target, "direct", method=method),
                          load.concurrency, seconds,
                          on_start=lambda: before.update({p: cpu_s(p) for p in watch}),
                          warmup_s=warmup_s)
    used = sum(cpu_s(pid) - before.get(pid, 0.0) for pid in watch)
    per_call = used / cell.calls * 1e6 if cell.calls else math.nan
    return Sample(target=target, load=load.label, calls=cell.calls, errors=cell.errors,
                  seconds=cell.seconds, p50_ms=cell.p50_ms, p90_ms=math.nan,
                  p99_ms=cell.p99_ms, max_ms=math.nan, cpu_us_per_call=per_call,
                  rss_kb=sum(rss_kb(pid) for pid in watch))
