"""What retention costs the appends running beside it, on SQLite and on JetStream (one node).

Each round, on a fresh log: ``--streams`` streams of ``--events`` events each are appended, the
projections fold them, then ``--appenders`` concurrent appenders (one stream each, one event per
append, each waiting for its acknowledgement) run for ``--seconds``. In the ``retention`` cell
a :class:`~sidecar.eventlog.retention.job.RetentionJob` (``--retain-events-per-stream``, cuts
of at most ``--cut-events``) starts with them and deletes the backlog; in the ``baseline`` cell
nothing else runs. Cells alternate round by round and the median round is kept, so the ratio
retention / baseline (same run, same machine) is what carries over.

Reported per store: appends/s and append p50/p99 in both cells, and the retention run's events
deleted, seconds and deletions per second. The claim it checks: a cut is bounded
(``--cut-events`` per store call), so appends keep going while a large backlog is deleted.

Usage::

    .venv/bin/python benchmarks/retention.py                 # prints, updates RESULTS.md
    .venv/bin/python benchmarks/retention.py --rounds 1 --no-write --stores sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import _results  # benchmarks/_results.py (this folder is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sidecar.eventlog.port import EventStore, open_store  # noqa: E402
from sidecar.eventlog.projections.follower import server_projections  # noqa: E402
from sidecar.eventlog.projections.runner import ProjectionRunner  # noqa: E402
from sidecar.eventlog.retention.job import RetentionJob  # noqa: E402
from sidecar.eventlog.retention.policy import RetentionPolicy  # noqa: E402
from tests.support.events import StreamFactory  # noqa: E402


@dataclass(frozen=True)
class Cell:
    appends_per_s: float
    p50_ms: float
    p99_ms: float
    deleted: int = 0
    retention_s: float = 0.0


@contextlib.asynccontextmanager
async def _store(kind: str, folder: Path, nats_url: str | None) -> AsyncIterator[EventStore]:
    if kind == "sqlite":
        url = f"sqlite:///{folder / f'log-{time.monotonic_ns()}.db'}"
    else:
        assert nats_url is not None
        url = f"{nats_url}?stream=RET{time.monotonic_ns()}&replicas=1&retention=1"
    store = open_store(url)
    try:
        yield store
    finally:
        await store.close()


async def _fill(store: EventStore, streams: int, events: int) -> list[StreamFactory]:
    producers = [StreamFactory("bench", f"pod-{n}") for n in range(streams)]
    for producer in producers:
        for start in range(0, events, 500):
            await store.append(producer.transitions(min(500, events - start)))
    return producers


async def _cell(kind: str, folder: Path, nats_url: str | None, args: argparse.Namespace,
                with_retention: bool) -> Cell:
    async with _store(kind, folder, nats_url) as store:
        producers = await _fill(store, args.streams, args.events)
        runner = ProjectionRunner(store, server_projections())
        await runner.catch_up()
        latencies: list[float] = []
        stop = asyncio.Event()

        async def append_loop(producer: StreamFactory) -> None:
            while not stop.is_set():
                event = producer.transitions(1)[0]
                started = time.perf_counter()
                await store.append([event])
                latencies.append(time.perf_counter() - started)

        deleted, retention_s = 0, 0.0

        async def retain() -> None:
            nonlocal deleted, retention_s
            policy = RetentionPolicy(retain_events_per_stream=args.retain,
                                     cut_events=args.cut_events)
            started = time.perf_counter()
            run = await RetentionJob(store, runner, policy).run_once()
            retention_s, deleted = time.perf_counter() - started, run.deleted

        tasks = [asyncio.create_task(append_loop(p)) for p in producers[: args.appenders]]
        if with_retention:
            tasks.append(asyncio.create_task(retain()))
        await asyncio.sleep(args.seconds)
        stop.set()
        await asyncio.gather(*tasks)
        latencies.sort()
        return Cell(
            appends_per_s=len(latencies) / args.seconds,
            p50_ms=latencies[len(latencies) // 2] * 1000,
            p99_ms=latencies[int(len(latencies) * 0.99)] * 1000,
            deleted=deleted,
            retention_s=retention_s,
        )


def _median(cells: list[Cell]) -> Cell:
    ordered = sorted(cells, key=lambda c: c.appends_per_s)
    return ordered[len(ordered) // 2]


async def _measure(kind: str, folder: Path, nats_url: str | None,
                   args: argparse.Namespace) -> tuple[Cell, Cell]:
    baseline, retention = [], []
    for _ in range(args.rounds):
        baseline.append(await _cell(kind, folder, nats_url, args, with_retention=False))
        retention.append(await _cell(kind, folder, nats_url, args, with_retention=True))
    return _median(baseline), _median(retention)


def _rows(kind: str, base: Cell, ret: Cell) -> list[str]:
    rate = ret.deleted / ret.retention_s if ret.retention_s else 0.0
    return [
        f"| {kind} | baseline | {base.appends_per_s:,.0f} | {base.p50_ms:.2f} | "
        f"{base.p99_ms:.2f} | | |",
        f"| {kind} | retention running | {ret.appends_per_s:,.0f} "
        f"({ret.appends_per_s / base.appends_per_s:.2f}x) | {ret.p50_ms:.2f} | "
        f"{ret.p99_ms:.2f} ({ret.p99_ms / base.p99_ms:.2f}x) | {ret.deleted:,} in "
        f"{ret.retention_s:.2f} s | {rate:,.0f}/s |",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", nargs="+", default=["sqlite", "jetstream"],
                        choices=["sqlite", "jetstream"])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--events", type=int, default=500, help="events per stream at start")
    parser.add_argument("--retain", type=int, default=20, help="--retain-events-per-stream")
    parser.add_argument("--cut-events", type=int, default=10_000)
    parser.add_argument("--appenders", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for kind in args.stores:
            if kind == "sqlite":
                base, ret = asyncio.run(_measure(kind, folder, None, args))
            else:
                from tests.support.nats import NatsCluster

                with NatsCluster(folder / "nats", size=1) as cluster:
                    url = f"nats://{cluster.urls}"
                    base, ret = asyncio.run(_measure("jetstream R1", folder, url, args))
            rows += _rows(kind if kind == "sqlite" else "jetstream R1", base, ret)
            print("\n".join(rows[-2:]), flush=True)
    body = "\n".join([
        f"{args.streams} streams x {args.events} events, then {args.appenders} appenders (one "
        f"event per append, each waiting for its acknowledgement) for {args.seconds:g} s; in "
        f"the retention cell a retention run (keep {args.retain} per stream, cuts of at most "
        f"{args.cut_events:,}) deletes the backlog meanwhile. Median of {args.rounds} rounds, "
        f"cells interleaved; load {load_before:.1f} before, {os.getloadavg()[0]:.1f} after "
        "(2 shared cores).",
        "",
        "| store | cell | appends/s | p50 ms | p99 ms | deleted | deletions/s |",
        "|---|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "Command: `.venv/bin/python benchmarks/retention.py`.",
    ])
    print(body)
    if not args.no_write:
        _results.write_section(_results.RESULTS_PATH, "retention",
                               "Retention beside appends (`benchmarks/retention.py`)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
