"""Per-call overhead of a circuit breaker in the CLOSED state: sidecar, pybreaker, circuitbreaker.

What is measured: a loop that calls a trivial function through each breaker, the way a user
would (sidecar: ``try_acquire`` + call + ``record``; pybreaker: ``CircuitBreaker.call``;
circuitbreaker: a ``@circuit``-decorated function), minus the same loop calling the function
unprotected. All cases run in the same process, interleaved round by round so that machine
noise hits them alike; each figure is the median over the rounds. Garbage collection is off
while timing.

Targets: sidecar <= 300 ns per allow+record, and >= 3x cheaper than pybreaker.
Absolute numbers depend on the machine; the ratios are what carry over.

Usage::

    .venv/bin/python benchmarks/breaker_overhead.py             # prints, updates RESULTS.md
    .venv/bin/python benchmarks/breaker_overhead.py --no-write --calls 50000
    .venv/bin/python benchmarks/breaker_overhead.py --check     # exit 1 if a target is missed
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import _results  # benchmarks/_results.py (this folder is on sys.path)
import circuitbreaker  # type: ignore[import-untyped]
import pybreaker

from sidecar.breaker import BreakerSettings, CircuitBreaker

SECTION = "breaker_overhead"
RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
DEFAULT_CALLS = 200_000
DEFAULT_REPEATS = 9
TARGET_NS = 300.0
TARGET_RATIO_VS_PYBREAKER = 3.0

Case = Callable[[int], int]  # runs n calls, returns elapsed ns


def trivial() -> None:
    """The protected 'upstream call': as cheap as a call can be, so overhead dominates."""


def case_baseline(n: int) -> int:
    fn = trivial
    start = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return time.perf_counter_ns() - start


def case_empty_loop(n: int) -> int:
    start = time.perf_counter_ns()
    for _ in range(n):
        pass
    return time.perf_counter_ns() - start


def make_sidecar_case(settings: BreakerSettings) -> Case:
    breaker = CircuitBreaker("bench", settings)

    def run(n: int) -> int:
        b, fn = breaker, trivial
        start = time.perf_counter_ns()
        for _ in range(n):
            permit = b.try_acquire()
            if permit is not None:
                fn()
                b.record(permit, 0.0, False)
        return time.perf_counter_ns() - start

    return run


def make_sidecar_failing_case(settings: BreakerSettings, every: int = 10) -> Case:
    """One call in ``every`` fails, never enough to trip: the window always holds a failure,
    so every ``record`` asks the trip rules (the path the all-healthy cases skip)."""
    breaker = CircuitBreaker("bench", settings)

    def run(n: int) -> int:
        b, fn = breaker, trivial
        outcomes = [i % every == 0 for i in range(n)]
        start = time.perf_counter_ns()
        for failed in outcomes:
            permit = b.try_acquire()
            if permit is not None:
                fn()
                b.record(permit, 0.0, failed)
        return time.perf_counter_ns() - start

    return run


def make_sidecar_timed_case() -> Case:
    """As a real caller would: also time the call (pybreaker and circuitbreaker do not)."""
    breaker = CircuitBreaker("bench")

    def run(n: int) -> int:
        b, fn, clock = breaker, trivial, time.perf_counter
        start = time.perf_counter_ns()
        for _ in range(n):
            permit = b.try_acquire()
            if permit is not None:
                t0 = clock()
                fn()
                b.record(permit, clock() - t0, False)
        return time.perf_counter_ns() - start

    return run


def make_pybreaker_case() -> Case:
    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)

    def run(n: int) -> int:
        b, fn = breaker, trivial
        start = time.perf_counter_ns()
        for _ in range(n):
            b.call(fn)
        return time.perf_counter_ns() - start

    return run


def make_circuitbreaker_case() -> Case:
    decorated = circuitbreaker.circuit(failure_threshold=5, recovery_timeout=30)(trivial)

    def run(n: int) -> int:
        fn = decorated
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        return time.perf_counter_ns() - start

    return run


def measure(cases: dict[str, Case], calls: int, repeats: int) -> dict[str, float]:
    """Median ns per call of each case, rounds interleaved (rotating order) to share noise."""
    names = list(cases)
    for name in names:  # warm up: caches, specialisation, lazy imports
        cases[name](max(1000, calls // 20))
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for round_no in range(repeats):
            shift = round_no % len(names)
            for name in names[shift:] + names[:shift]:
                samples[name].append(cases[name](calls) / calls)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: statistics.median(values) for name, values in samples.items()}


def render_table(medians: dict[str, float], calls: int, repeats: int) -> tuple[str, bool]:
    baseline = medians["baseline: unprotected call"]
    overhead = {name: max(0.0, value - baseline) for name, value in medians.items()}
    ours = overhead["sidecar (count window)"]
    ratio_pybreaker = overhead["pybreaker CircuitBreaker.call"] / ours if ours else float("inf")
    met = ours <= TARGET_NS and ratio_pybreaker >= TARGET_RATIO_VS_PYBREAKER
    lines = [
        f"Per-call overhead in the CLOSED state (median of {repeats} interleaved rounds of "
        f"{calls:,} calls; Python {platform.python_version()}, {platform.machine()}, "
        f"measured {time.strftime('%Y-%m-%d')}). Overhead = loop time minus the same loop "
        "calling the unprotected function.",
        "",
        "| case | ns/call (loop) | overhead ns/call | overhead vs sidecar |",
        "|---|---:|---:|---:|",
    ]
    for name, value in medians.items():
        if name.startswith("baseline") or name.startswith("empty"):
            lines.append(f"| {name} | {value:.1f} | - | - |")
            continue
        relative = overhead[name] / ours if ours else float("inf")
        lines.append(f"| {name} | {value:.1f} | {overhead[name]:.1f} | {relative:.2f}x |")
    lines += [
        "",
        f"Targets: sidecar <= {TARGET_NS:.0f} ns/call: **{ours:.0f} ns**; "
        f">= {TARGET_RATIO_VS_PYBREAKER:.0f}x cheaper than pybreaker: **{ratio_pybreaker:.1f}x**. "
        f"{'Both met.' if met else 'NOT met in this run.'}",
        "",
        "The \"timed\" row also measures the call with `time.perf_counter()` as a real caller "
        "must (the slow-call rule needs the duration); pybreaker and circuitbreaker do not "
        "measure latency at all. In the \"10% failing\" row one call in ten fails (never "
        "enough to trip), so the window always holds a failure and every call asks the trip "
        "rules; the other sidecar rows are all healthy, where no rule is asked.",
    ]
    return "\n".join(lines), met


def write_section(path: Path, body: str) -> None:
    """Replace this benchmark's section of RESULTS.md, keeping every other section."""
    _results.write_section(
        path, SECTION, "Breaker overhead (`benchmarks/breaker_overhead.py`)", body
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=DEFAULT_CALLS, help="calls per round")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="rounds (median)")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    parser.add_argument("--results", type=Path, default=RESULTS_PATH, help="results file")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.repeats < 1:
        parser.error("--calls and --repeats must be >= 1")

    cases: dict[str, Case] = {
        "empty loop": case_empty_loop,
        "baseline: unprotected call": case_baseline,
        "sidecar (count window)": make_sidecar_case(BreakerSettings()),
        "sidecar (time window)": make_sidecar_case(BreakerSettings(window_type="time")),
        "sidecar (count window, timed)": make_sidecar_timed_case(),
        "sidecar (count window, 10% failing)": make_sidecar_failing_case(BreakerSettings()),
        "pybreaker CircuitBreaker.call": make_pybreaker_case(),
        "circuitbreaker @circuit": make_circuitbreaker_case(),
    }
    medians = measure(cases, args.calls, args.repeats)
    table, met = render_table(medians, args.calls, args.repeats)
    print(table)
    if not args.no_write:
        write_section(args.results, table)
        print(f"\nwrote section '{SECTION}' of {args.results}", file=sys.stderr)
    return 0 if met or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
