"""Helpers of the chaos suite: load drivers that record what each host call got, an upstream on
a fixed port that can be killed and started again, RSS readings, percentiles, and a report
line per test (``CHAOS ...``, printed with ``-s``; docs/reliability.md quotes them)."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from tests.support.procs import PYTHON, ManagedProcess, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


def rss_kib(pid: int) -> int:
    """Resident set size of a process (``VmRSS`` in /proc/PID/status), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def report(name: str, **figures: object) -> None:
    """One greppable line of measured figures for docs/reliability.md."""
    print(f"\nCHAOS {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()), flush=True)


@dataclass
class CallRecord:
    code: grpc.StatusCode
    latency_s: float
    breaker_open: bool = False
    overflow: bool = False


@dataclass
class LoadResult:
    """What the host saw during a load run."""

    records: list[CallRecord] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def codes(self) -> Counter[str]:
        return Counter(r.code.name for r in self.records)

    def latencies_ms(self, code: grpc.StatusCode | None = None) -> list[float]:
        return [r.latency_s * 1000 for r in self.records if code is None or r.code is code]

    def p(self, q: float, code: grpc.StatusCode | None = None) -> float:
        return percentile(self.latencies_ms(code), q)


async def _one(call: grpc.aio.UnaryUnaryMultiCallable, timeout_s: float | None) -> CallRecord:
    started = time.monotonic()
    try:
        await call(b"chaos", timeout=timeout_s)
        return CallRecord(grpc.StatusCode.OK, time.monotonic() - started)
    except grpc.aio.AioRpcError as error:
        trailing = dict(error.trailing_metadata() or ())
        return CallRecord(error.code(), time.monotonic() - started,
                          breaker_open=trailing.get("x-sidecar-breaker") == "open",
                          overflow=trailing.get("x-sidecar-overflow") == "true")


async def _drive(address: str, method: str, concurrency: int, duration_s: float,
                 timeout_s: float | None, pause_s: float) -> LoadResult:
    result = LoadResult()
    stop_at = time.monotonic() + duration_s
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(method)

        async def worker() -> None:
            while time.monotonic() < stop_at:
                result.records.append(await _one(call, timeout_s))
                if pause_s:
                    await asyncio.sleep(pause_s)

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.duration_s = time.monotonic() - started
    return result


def drive(address: str, method: str, *, concurrency: int, duration_s: float,
          timeout_s: float | None = None, pause_s: float = 0.0) -> LoadResult:
    """``concurrency`` callers calling ``method`` back to back (raw bytes) for ``duration_s``;
    ``timeout_s=None`` sets no deadline, so the sidecar's ``timeout_ms`` is what bounds a call.
    Blocks the calling thread."""
    return asyncio.run(_drive(address, method, concurrency, duration_s, timeout_s, pause_s))


class FixedPortUpstream:
    """``tests.support.upstream`` on one port that survives kill and start (the sidecar's
    config names that port, so a restarted upstream is the same upstream to it)."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.process: ManagedProcess | None = None
        self._starts = 0

    def start(self) -> None:
        self._starts += 1
        self.process = ManagedProcess(
            [PYTHON, "-m", "tests.support.upstream", "--port", str(self.port)],
            self.workdir / f"upstream-{self.port}-{self._starts}.log", cwd=ROOT)
        wait_for_port(self.port, proc=self.process.proc)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.close()
            self.process = None

    def close(self) -> None:
        if self.process is not None:
            self.process.close()
            self.process = None

    def __enter__(self) -> FixedPortUpstream:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def logged_transitions(log_text: str, breaker: str) -> list[tuple[str, str, str]]:
    """``(from, to, reason)`` of every transition of ``breaker`` in a sidecar's JSON log."""
    found = []
    for line in log_text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "transition" and entry.get("breaker") == breaker:
            found.append((entry["from_state"], entry["to_state"], entry["reason"]))
    return found
