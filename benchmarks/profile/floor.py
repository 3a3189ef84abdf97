"""The sidecar at the Python floor: its CPU and latency over the naive
pass-through, with the features users run on, and a profile of where its time goes.

One run starts three echo servers, the naive unary pass-through and two sidecars (all from
``benchmarks/proxy.py``, each in its own process), then interleaves cells round by round:

- ``direct``: the first echo server;
- ``naive (unary)``: the baseline (``proxy.py``'s raw-bytes unary pass-through to echo a);
- ``naive 3 channels + deadline + traceparent``: the naive pass-through doing the grpc-level
  work the sidecar must do for this config (round-robin over the three echo servers, the
  caller's deadline, a ``traceparent``, the upstream's metadata passed back): what separates
  the sidecar from it is the sidecar's own Python;
- ``sidecar full``: breaker (defaults), metrics, ``endpoints: [a, b, c]`` with ``p2c_ewma``,
  tracing at 1% exported over OTLP/gRPC to a receiver process that counts spans;
- ``sidecar full + retry``: the same with ``retry`` configured for the method (no failures, so
  never a second attempt: the budget deposit and the retry path's bookkeeping only).

Judged on the median over rounds of each round's pair (a cell and naive's cell of the same
round): CPU µs/call of the proxy process <= 1.03x naive's at concurrency 16; p50 at
concurrency 1 <= naive's + 0.05 ms; ``full + retry`` within 5% of ``full``.

``--profile DIR`` then samples the ``sidecar full`` process with py-spy (``--native`` off: the
Python frames, grpc's Cython frames included) during one more cell at concurrency 16, and
writes DIR/NAME.txt (top functions by own and by total samples) and DIR/NAME.svg (flame graph).

Usage::

    .venv/bin/python benchmarks/profile/floor.py --seconds 2 --rounds 3
    .venv/bin/python benchmarks/profile/floor.py --seconds 2 --rounds 1 --profile \
        benchmarks/profile --name before
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import itertools
import os
import pstats
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from proxy import (  # benchmarks/proxy.py (benchmarks/ is put on sys.path above)
    ECHO_ARGS,
    REFLECTED_METHOD,
    Cell,
    Processes,
    Target,
    run_cell,
    thread_cpu_s,
)

DIRECT, NAIVE = "direct", "naive (unary)"
NAIVE_FLOOR = "naive 3 channels + deadline + traceparent"
NAIVE_3, NAIVE_DEADLINE = "naive 3 channels", "naive + deadline + traceparent"
"""The floor's two parts alone (``--parts``): which of them costs what."""
FULL, RETRY = "sidecar full", "sidecar full + retry"
TARGETS = (DIRECT, NAIVE, NAIVE_3, NAIVE_DEADLINE, NAIVE_FLOOR, FULL, RETRY)
CONCURRENCIES = (1, 16)
CPU_RATIO, ADDED_P50_MS, RETRY_RATIO = 1.03, 0.05, 1.05
WARMUP_S = 0.5
PY_SPY = str(Path(sys.executable).with_name("py-spy"))


class _NaiveFloor(grpc.GenericRpcHandler):  # type: ignore[misc]
    """The grpc-level work the sidecar cannot skip, and nothing else: each call round-robin
    over 3 channels, with the caller's deadline (else 2 s), a fresh ``traceparent`` and the
    upstream's initial and trailing metadata passed back. The sidecar minus this is its own
    Python (routing, breaker, balancer, metrics, spans)."""

    def __init__(self, channels: list[grpc.aio.Channel], extras: bool = True) -> None:
        self._channels = channels
        self._extras = extras  # the deadline, traceparent and metadata (else bare calls)
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = self._handlers.get(details.method)
        if handler is None:
            upstreams = itertools.cycle([c.unary_unary(details.method) for c in self._channels])

            async def bare(request: bytes, context: Any) -> bytes:
                response: bytes = await next(upstreams)(request)
                return response

            async def forward(request: bytes, context: Any) -> bytes:
                timeout = context.time_remaining()
                call = next(upstreams)(
                    request, timeout=2.0 if timeout is None else timeout,
                    metadata=(("traceparent", f"00-{random.getrandbits(128):032x}-"
                                              f"{random.getrandbits(64):016x}-02"),))
                response: bytes = await call
                initial = await call.initial_metadata()
                if initial:
                    await context.send_initial_metadata(tuple(initial))
                trailing = await call.trailing_metadata()
                if trailing:
                    context.set_trailing_metadata(tuple(trailing))
                return response
            handler = self._handlers[details.method] = grpc.unary_unary_rpc_method_handler(
                forward if self._extras else bare)
        return handler


async def _serve_floor(port: int, targets: list[str], extras: bool) -> None:
    server = grpc.aio.server(options=(("grpc.so_reuseport", 0),))
    server.add_generic_rpc_handlers((_NaiveFloor(
        [grpc.aio.insecure_channel(t) for t in targets], extras),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def _upstream(echoes: list[str], retry: bool) -> dict[str, Any]:
    upstream: dict[str, Any] = {"endpoints": echoes, "balancer": "p2c_ewma",
                                "routes": ["/bench."]}
    if retry:
        upstream["retry"] = {"max_attempts": 3, "retryable_codes": ["UNAVAILABLE"],
                             "methods": [REFLECTED_METHOD]}
    return {"echo": upstream}


BEFORE = "sidecar full (before)"
"""``--before DIR``: ``sidecar full`` again, importing the sidecar package from DIR (e.g. a
``git archive`` of an older commit): a change's gain measured in one run."""


def start(workdir: Path, before: Path | None = None) -> Processes:
    procs = Processes()
    try:
        echoes = [f"127.0.0.1:{procs.start(f'echo {n}', ECHO_ARGS)}" for n in "abc"]
        procs.ports[DIRECT] = int(echoes[0].rsplit(":")[1])
        procs.pids[DIRECT] = procs.pids["echo a"]
        procs.ports[NAIVE] = procs.start(NAIVE, [*ECHO_ARGS[:2], "--role", "naive_unary",
                                                 "--target", echoes[0]])
        for name, targets, extras in ((NAIVE_FLOOR, echoes, ()), (NAIVE_3, echoes, ("--bare",)),
                                      (NAIVE_DEADLINE, echoes[:1], ())):
            procs.ports[name] = procs.start(name, [
                sys.executable, __file__, "--role", "naive_floor", "--targets", ",".join(targets),
                *extras])
        otlp = procs.start("otlp", [sys.executable, "-m", "tests.support.otlp_receiver",
                                    "--count-only"])
        tracing = {"tracing": {"otlp_endpoint": f"http://127.0.0.1:{otlp}",
                               "sample_ratio": 0.01}}
        for name, retry in ((FULL, False), (RETRY, True)):
            procs.start_sidecar(name, workdir, _upstream(echoes, retry), tracing)
        if before is not None:
            procs.start_sidecar(BEFORE, workdir, _upstream(echoes, False), tracing,
                                env={"PYTHONPATH": str(before)})
        time.sleep(1.0)  # let the sidecars learn the method's shape from reflection
        return procs
    except BaseException:
        procs.close()
        raise


def _cell(procs: Processes, name: str, concurrency: int, seconds: float) -> tuple[Cell, float]:
    """One cell, and the CPU µs/call of the proxy's main thread (the asyncio loop: all Python;
    the rest is grpc core's threads)."""
    pid = procs.pids[name]
    before: dict[int, float] = {}
    cell = run_cell(procs, Target(name, "sidecar"), concurrency, seconds,
                    on_start=lambda: before.update(thread_cpu_s(pid)), warmup_s=WARMUP_S)
    main = thread_cpu_s(pid).get(pid, 0.0) - before.get(pid, 0.0)
    return cell, main / cell.calls * 1e6 if cell.calls else float("nan")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _paired(a: list[Cell], b: list[Cell], value: Callable[[Cell, Cell], float]) -> float:
    """Median over rounds of ``value(a's cell, b's cell)`` of the same round."""
    return _median([value(x, y) for x, y in zip(a, b, strict=False)])


def _cpu_ratio(x: Cell, y: Cell) -> float:
    return x.cpu_us_per_call / y.cpu_us_per_call


def _p50_diff(x: Cell, y: Cell) -> float:
    return x.p50_ms - y.p50_ms


def report(rounds: dict[tuple[str, int], list[Cell]]) -> list[str]:
    lines = ["| target | c | calls/s | p50 ms | p99 ms | CPU µs/call | CPU vs naive "
             "| p50 vs naive ms |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in CONCURRENCIES:
        base = rounds.get((NAIVE, c), [])
        for name in (*TARGETS, BEFORE):
            cells = rounds.get((name, c))
            if not cells:
                continue
            lines.append(
                f"| {name} | {c} | {_median([x.throughput for x in cells]):,.0f} "
                f"| {_median([x.p50_ms for x in cells]):.3f} "
                f"| {_median([x.p99_ms for x in cells]):.3f} "
                f"| {_median([x.cpu_us_per_call for x in cells]):.0f} "
                f"| {_paired(cells, base, _cpu_ratio):.3f}x "
                f"| {_paired(cells, base, _p50_diff):+.3f} |")
    lines.append("")
    for name in (FULL, RETRY):
        cpu = _paired(rounds.get((name, 16), []), rounds.get((NAIVE, 16), []), _cpu_ratio)
        p50 = _paired(rounds.get((name, 1), []), rounds.get((NAIVE, 1), []), _p50_diff)
        lines.append(f"{name}: CPU {cpu:.3f}x naive at c=16 (target <= {CPU_RATIO}); p50 "
                     f"{p50:+.3f} ms vs naive at c=1 (target <= +{ADDED_P50_MS})")
        floor16 = _paired(rounds.get((name, 16), []), rounds.get((NAIVE_FLOOR, 16), []),
                          _cpu_ratio)
        floor1 = _paired(rounds.get((name, 1), []), rounds.get((NAIVE_FLOOR, 1), []),
                         _p50_diff)
        lines.append(f"{name} vs `{NAIVE_FLOOR}`: CPU {floor16:.3f}x at c=16, p50 "
                     f"{floor1:+.3f} ms at c=1 (what the sidecar's own Python costs)")
    for c in CONCURRENCIES:
        full, before = rounds.get((FULL, c), []), rounds.get((BEFORE, c), [])
        if full and before:
            lines.append(f"`{FULL}` vs `{BEFORE}` at c={c}: CPU "
                         f"{_paired(full, before, _cpu_ratio):.3f}x, p50 "
                         f"{_paired(full, before, _p50_diff):+.3f} ms")
    for c in CONCURRENCIES:
        full, retry = rounds.get((FULL, c), []), rounds.get((RETRY, c), [])
        if full and retry:
            lines.append(f"retry vs full at c={c}: CPU {_paired(retry, full, _cpu_ratio):.3f}x, "
                         f"p50 {_paired(retry, full, _p50_diff):+.3f} ms (target: within "
                         f"{RETRY_RATIO - 1:.0%})")
    return lines


def _frame(entry: str) -> str:
    """``function (path/to/file.py:LINE)`` -> ``function (file.py)``: one row per function."""
    name, _, where = entry.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if "sidecar" in parts or "grpc" in parts else parts[-1] \
        if parts else path
    return f"{name} ({short})"


def _own_samples(raw: Path) -> tuple[collections.Counter[str], collections.Counter[str], int]:
    """py-spy's collapsed stacks: samples by function, own and total, and all samples."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        samples += count
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    return own, total, samples


def top_table(raw: Path, limit: int = 45) -> list[str]:
    """py-spy's collapsed stacks -> the functions with the most own and total samples."""
    own, total, samples = _own_samples(raw)
    out = [f"{samples} samples (py-spy: every thread's CPU, not idle waits)",
           "", f"{'own %':>7} {'total %':>8}  function (own)"]
    for frame, count in own.most_common(limit):
        out.append(f"{100 * count / samples:7.2f} {100 * total[frame] / samples:8.2f}  {frame}")
    out += ["", f"{'total %':>8}  function (total)"]
    for frame, count in total.most_common(limit):
        out.append(f"{100 * count / samples:8.2f}  {frame}")
    return out


def diff_table(raws: dict[str, tuple[Path, int]], rate: int, limit: int = 40) -> list[str]:
    """Own time per forwarded call (µs: samples / rate / calls) by function, naive vs sidecar,
    largest difference first."""
    per_call: dict[str, dict[str, float]] = {}
    totals: dict[str, float] = {}
    for name, (raw, calls) in raws.items():
        own, _, samples = _own_samples(raw)
        scale = 1e6 / rate / max(calls, 1)
        per_call[name] = {frame: count * scale for frame, count in own.items()}
        totals[name] = samples * scale
    naive, full = per_call.get(NAIVE, {}), per_call.get(FULL, {})
    rows = sorted(((full.get(f, 0.0) - naive.get(f, 0.0), f) for f in set(naive) | set(full)),
                  reverse=True)
    out = [f"Own time per call, µs (py-spy samples / {rate} Hz / calls): naive "
           f"{totals.get(NAIVE, 0.0):.0f} µs, sidecar full {totals.get(FULL, 0.0):.0f} µs in all",
           "", f"{'naive':>7} {'sidecar':>8} {'diff':>7}  function (own)"]
    for diff, frame in rows[:limit]:
        out.append(f"{naive.get(frame, 0.0):7.1f} {full.get(frame, 0.0):8.1f} {diff:+7.1f}  "
                   f"{frame}")
    out += ["", "most negative (the naive spends more):"]
    for diff, frame in rows[-10:]:
        out.append(f"{naive.get(frame, 0.0):7.1f} {full.get(frame, 0.0):8.1f} {diff:+7.1f}  "
                   f"{frame}")
    return out


def profile(procs: Processes, out_dir: Path, name: str, seconds: float, native: bool) -> None:
    """py-spy on the naive pass-through and on ``sidecar full``, one c=16 cell each:
    DIR/NAME.txt (the sidecar's top functions, and the per-call difference by function) and
    DIR/NAME.svg (the sidecar's flame graph)."""
    rate = 1000
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raws: dict[str, tuple[Path, int]] = {}
        svg = Path(tmp) / "flame.svg"
        cells: dict[str, Cell] = {}
        for target in (NAIVE, FULL):
            raw = Path(tmp) / f"{len(raws)}.raw"
            outputs = [("raw", raw)] + ([("flamegraph", svg)] if target == FULL else [])
            spies = [subprocess.Popen(
                [PY_SPY, "record", "--pid", str(procs.pids[target]), "--rate", str(rate),
                 "--duration", str(int(seconds)), "--nonblocking", "--format", fmt,
                 "--output", str(path), *(["--native"] if native else [])],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for fmt, path in outputs]
            time.sleep(0.5)  # py-spy attaches
            started = time.monotonic()
            cell = run_cell(procs, Target(target, "sidecar"), 16, seconds - 0.5, warmup_s=0.0)
            for spy in spies:
                spy.wait(timeout=60)
            # the samples cover `seconds`, the cell a little less: scale calls to match
            calls = int(cell.calls * seconds / max(time.monotonic() - started, seconds - 0.5))
            raws[target], cells[target] = (raw, calls), cell
        header = [f"py-spy{' --native' if native else ''}, concurrency 16: "
                  + "; ".join(f"`{t}` {c.throughput:,.0f} calls/s, {c.cpu_us_per_call:.0f} "
                              f"CPU µs/call while sampled" for t, c in cells.items()), ""]
        body = [*diff_table(raws, rate), "", f"## `{FULL}`", "", *top_table(raws[FULL][0])]
        (out_dir / f"{name}.txt").write_text("\n".join(header + body) + "\n")
        if svg.exists():
            shutil.copy(svg, out_dir / f"{name}.svg")


PROFILED = Path(__file__).resolve().parent.parent / "_profiled.py"


def cprofile(workdir: Path, out_dir: Path, name: str, seconds: float) -> None:
    """The naive pass-through and ``sidecar full`` again, in fresh processes under cProfile
    (``benchmarks/_profiled.py``: main thread CPU time, only while a c=16 cell is measured):
    DIR/NAME-cprofile.txt, own and cumulative time per forwarded call of the top functions."""
    paths = {NAIVE: workdir / "naive.prof", FULL: workdir / "full.prof"}
    procs = Processes()
    calls: dict[str, int] = {}
    try:
        echoes = [f"127.0.0.1:{procs.start(f'echo {n}', ECHO_ARGS)}" for n in "abc"]
        procs.ports[NAIVE] = procs.start(NAIVE, [sys.executable, str(PROFILED),
                                                 str(paths[NAIVE]), *ECHO_ARGS[1:2], "--role",
                                                 "naive_unary", "--target", echoes[0]])
        otlp = procs.start("otlp", [sys.executable, "-m", "tests.support.otlp_receiver",
                                    "--count-only"])
        procs.start_sidecar(FULL, workdir, _upstream(echoes, False),
                            {"tracing": {"otlp_endpoint": f"http://127.0.0.1:{otlp}",
                                         "sample_ratio": 0.01}},
                            launcher=[sys.executable, str(PROFILED), str(paths[FULL])])
        time.sleep(1.0)
        for target in (NAIVE, FULL):
            pid = procs.pids[target]
            cell = run_cell(procs, Target(target, "sidecar"), 16, seconds,
                            on_start=functools.partial(os.kill, pid, signal.SIGUSR1),
                            warmup_s=WARMUP_S)
            os.kill(pid, signal.SIGUSR2)
            calls[target] = cell.calls
        os.kill(procs.pids[NAIVE], signal.SIGINT)  # the naive server dies of SIGTERM unprofiled
        time.sleep(1.0)
    finally:
        procs.close()
    lines: list[str] = []
    for target, path in paths.items():
        if not path.exists():
            lines.append(f"{target}: no profile written")
            continue
        stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
        n = calls[target]
        rows = sorted(((tt, ct, nc, f"{Path(f).name}:{ln}({fn})")
                       for (f, ln, fn), (_, nc, tt, ct, _) in stats.items()), reverse=True)
        total = sum(r[0] for r in rows)
        lines += [f"## {target}: {n:,} calls at c=16 under cProfile (main thread CPU; "
                  f"cProfile inflates small functions: compare, do not add up), "
                  f"{total / n * 1e6:.1f} µs/call profiled in all", "",
                  f"{'own µs':>8} {'cum µs':>8} {'calls/call':>10}  function"]
        lines += [f"{tt / n * 1e6:8.2f} {ct / n * 1e6:8.2f} {nc / n:10.2f}  {where}"
                  for tt, ct, nc, where in rows[:60]]
        lines.append("")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}-cprofile.txt").write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated target names")
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--profile", type=Path, help="write a py-spy profile to this folder")
    parser.add_argument("--name", default="profile", help="profile file name (no suffix)")
    parser.add_argument("--cprofile", type=Path, help="write cProfile tables to this folder")
    parser.add_argument("--native", action="store_true", help="py-spy --native (C frames)")
    parser.add_argument("--before", type=Path, metavar="DIR",
                        help=f"also `{BEFORE}`: the sidecar package imported from DIR")
    parser.add_argument("--role", choices=("naive_floor",), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--targets", help=argparse.SUPPRESS)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--parts", action="store_true",
                        help=f"also `{NAIVE_3}` and `{NAIVE_DEADLINE}`")
    args = parser.parse_args()
    if args.role:
        asyncio.run(_serve_floor(args.port, args.targets.split(","), not args.bare))
        return 0
    names = [n.strip() for n in args.only.split(",") if n.strip()] or [
        t for t in TARGETS if args.parts or t not in (NAIVE_3, NAIVE_DEADLINE)] + (
        [BEFORE] if args.before is not None else [])
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        procs = start(Path(workdir), args.before)
        try:
            rounds: dict[tuple[str, int], list[Cell]] = {}
            for r in range(args.rounds):
                for c in concurrencies:
                    order = names if r % 2 == 0 else names[::-1]
                    for name in order:
                        cell, main_us = _cell(procs, name, c, args.seconds)
                        rounds.setdefault((name, c), []).append(cell)
                        print(f"{name:22} c={c:<3} {cell.throughput:8,.0f}/s p50 "
                              f"{cell.p50_ms:.3f} p99 {cell.p99_ms:.3f} cpu "
                              f"{cell.cpu_us_per_call:.0f} us/call (main thread {main_us:.0f}) "
                              f"err {cell.errors}", flush=True)
            print("\n".join(report(rounds)))
            if args.profile is not None:
                profile(procs, args.profile, args.name, max(args.seconds, 5.0), args.native)
        finally:
            procs.close()
    if args.cprofile is not None:
        with tempfile.TemporaryDirectory() as workdir:
            cprofile(Path(workdir), args.cprofile, args.name, max(args.seconds, 3.0))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
