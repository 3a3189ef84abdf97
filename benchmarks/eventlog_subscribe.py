"""Live delivery to subscribers on the JetStream store: ordered consumer vs read_all polling.

``EventStore.follow`` feeds Subscribe. On JetStream its live part is an ordered consumer
(``NatsEventStore.follow``); the port's default (``EventStore.follow``: ``wait_for_append`` then
``read_all`` pages, batched direct gets with recent commits answered from memory) is the
baseline, measured in the same run on the same nats-server. Both catch up with ``read_all``
pages, so only live delivery is compared. Measured at the store port, in-process (the gRPC
layer on top is the same for both).

Rows, each on a fresh stream of one nats-server 2.15 node (file storage):

- **live throughput**: ``--subscribers`` followers on one adapter; a writer appends
  ``--events`` events (batches of 100, 4 streams at once) as fast as it can; events/s
  delivered to *each* subscriber = events / (first append -> last event delivered to the
  slowest). The writer is another adapter (another event log replica) or the subscribers'
  own adapter (one server).
- **latency**: one subscriber; the writer appends single events one after the other with a
  pause of ``PAUSE_S``; per event, append start -> delivered, median and p99.

The machine is shared and noisy: compare the two paths within a run, not across runs.

Usage::

    .venv/bin/python benchmarks/eventlog_subscribe.py            # prints, updates RESULTS.md
    .venv/bin/python benchmarks/eventlog_subscribe.py --no-write --events 5000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import _results  # benchmarks/_results.py (this folder is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sidecar.eventlog.port import (  # noqa: E402
    EventStore,
    FollowBatch,
    open_store,
)
from tests.support.events import StreamFactory  # noqa: E402

SECTION = "eventlog_subscribe"
RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
DEFAULT_EVENTS = 20_000
DEFAULT_SUBSCRIBERS = (1, 8)
WRITER_STREAMS = 4
WRITER_BATCH = 100
LATENCY_EVENTS = 300
PAUSE_S = 0.005
PAGE_EVENTS = 500
WAIT_S = 1.0
DELIVERY_BOUND_S = 120.0
"""Only a hang exceeds it."""

Follow = Callable[[EventStore, int], AsyncGenerator[FollowBatch, None]]


def ordered_consumer(store: EventStore, start: int) -> AsyncGenerator[FollowBatch, None]:
    return store.follow(start, page_events=PAGE_EVENTS, wait_s=WAIT_S)


def read_all_polling(store: EventStore, start: int) -> AsyncGenerator[FollowBatch, None]:
    return EventStore.follow(store, start, page_events=PAGE_EVENTS, wait_s=WAIT_S)


PATHS: dict[str, Follow] = {
    "read_all + wait_for_append (port default)": read_all_polling,
    "JetStream ordered consumer": ordered_consumer,
}


@dataclass
class Row:
    scenario: str
    path: str
    value: float
    unit: str


class Follower:
    """One subscriber: records when each position arrived."""

    def __init__(self, follow: Follow, store: EventStore, start: int, last: int) -> None:
        self.arrived: dict[int, float] = {}
        self.ready = asyncio.Event()
        self.task = asyncio.create_task(self._run(follow, store, start, last))

    async def _run(self, follow: Follow, store: EventStore, start: int, last: int) -> None:
        async with contextlib.aclosing(follow(store, start)) as feed:
            async for batch in feed:
                now = time.perf_counter()
                if batch.live:
                    self.ready.set()
                for event in batch.events:
                    self.arrived[event.global_position] = now
                if batch.scanned_to > last:
                    return


async def _stream_url(url: str, name: str) -> str:
    return f"{url.split('?')[0]}?stream={name}&replicas=1"


async def live_throughput(url: str, follow: Follow, events: int, subscribers: int,
                          same_adapter: bool, run_id: str) -> float:
    stream_url = await _stream_url(url, f"SUB{run_id}")
    reader = open_store(stream_url)
    writer = reader if same_adapter else open_store(stream_url)
    try:
        await reader.head_position()
        await writer.head_position()
        followers = [Follower(follow, reader, 1, events) for _ in range(subscribers)]
        for follower in followers:
            await asyncio.wait_for(follower.ready.wait(), DELIVERY_BOUND_S)
        producers = [StreamFactory("bench", f"pod-{i}") for i in range(WRITER_STREAMS)]
        per_stream = events // WRITER_STREAMS // WRITER_BATCH

        async def produce(producer: StreamFactory) -> None:
            for _ in range(per_stream):
                await writer.append(producer.transitions(WRITER_BATCH))

        started = time.perf_counter()
        await asyncio.gather(*(produce(p) for p in producers))
        await asyncio.wait_for(asyncio.gather(*(f.task for f in followers)), DELIVERY_BOUND_S)
        finished = max(max(f.arrived.values()) for f in followers)
        for follower in followers:
            assert sorted(follower.arrived) == list(range(1, events + 1)), "gap or duplicate"
        return events / (finished - started)
    finally:
        if writer is not reader:
            await writer.close()
        await reader.close()


async def latency(url: str, follow: Follow, same_adapter: bool, run_id: str) -> list[float]:
    stream_url = await _stream_url(url, f"LAT{run_id}")
    reader = open_store(stream_url)
    writer = reader if same_adapter else open_store(stream_url)
    try:
        await reader.head_position()
        await writer.head_position()
        follower = Follower(follow, reader, 1, LATENCY_EVENTS)
        await asyncio.wait_for(follower.ready.wait(), DELIVERY_BOUND_S)
        producer = StreamFactory("latency", "pod-1")
        sent: dict[int, float] = {}
        for position in range(1, LATENCY_EVENTS + 1):
            sent[position] = time.perf_counter()
            await writer.append([producer.transition()])
            await asyncio.sleep(PAUSE_S)
        await asyncio.wait_for(follower.task, DELIVERY_BOUND_S)
        return [follower.arrived[p] - sent[p] for p in sent]
    finally:
        if writer is not reader:
            await writer.close()
        await reader.close()


async def run_all(url: str, args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    run = 0
    for same_adapter in (False, True):
        writer = ("writer on the subscribers' adapter" if same_adapter
                  else "writer on another adapter")
        for subscribers in args.subscribers:
            for name, follow in PATHS.items():
                run += 1
                rate = await live_throughput(url, follow, args.events, subscribers,
                                             same_adapter, f"{run}")
                rows.append(Row(f"live, {subscribers} subscriber(s), {writer}", name, rate,
                                "events/s to each subscriber"))
                print(f"{rows[-1].scenario} | {name}: {rate:,.0f} events/s", flush=True)
        for name, follow in PATHS.items():
            run += 1
            samples = sorted(await latency(url, follow, same_adapter, f"{run}"))
            p50 = statistics.median(samples) * 1000
            p99 = samples[int(len(samples) * 0.99) - 1] * 1000
            rows.append(Row(f"latency p50, {writer}", name, p50, "ms"))
            rows.append(Row(f"latency p99, {writer}", name, p99, "ms"))
            print(f"latency {writer} | {name}: p50 {p50:.2f} ms, p99 {p99:.2f} ms", flush=True)
    return rows


def render(rows: list[Row], args: argparse.Namespace) -> str:
    scenarios = list(dict.fromkeys(r.scenario for r in rows))
    names = list(PATHS)
    lines = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f}, one nats-server 2.15 node, {args.events} events per live "
        f"row, {LATENCY_EVENTS} single appends for latency. Store port level, in-process.",
        "",
        "Live rows: events delivered per second to each subscriber while a writer appends as "
        "fast as it can (so a path that keeps up shows the append rate; one process shares 2 "
        "cores with the writer and nats-server). Latency: append start to delivery. Ratio "
        "< 1: the ordered consumer delivered less / waited less.",
        "",
        f"| scenario | {names[0]} | {names[1]} | consumer / default |",
        "|---|---:|---:|---:|",
    ]
    for scenario in scenarios:
        by_path = {r.path: r for r in rows if r.scenario == scenario}
        base, new = by_path[names[0]], by_path[names[1]]
        fmt = "{:,.0f}" if base.unit.startswith("events") else "{:.2f}"
        lines.append(
            f"| {scenario} ({base.unit}) | {fmt.format(base.value)} | {fmt.format(new.value)} "
            f"| {new.value / base.value:.2f} |"
        )
    return "\n".join(lines) + "\n"


def write_results(body: str, path: Path = RESULTS_PATH) -> None:
    """Replace this benchmark's section of RESULTS.md, keeping every other section."""
    _results.write_section(
        path, SECTION, "Subscribe on JetStream (`benchmarks/eventlog_subscribe.py`)", body
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    parser.add_argument("--subscribers", type=int, nargs="+", default=list(DEFAULT_SUBSCRIBERS))
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args(argv)
    if args.events % (WRITER_STREAMS * WRITER_BATCH):
        parser.error(f"--events must be a multiple of {WRITER_STREAMS * WRITER_BATCH}")

    from tests.support.nats import NatsCluster

    with tempfile.TemporaryDirectory() as tmp, NatsCluster(Path(tmp), size=1) as cluster:
        rows = asyncio.run(run_all(cluster.store_url(stream="BENCH"), args))
    body = render(rows, args)
    print(body)
    if not args.no_write:
        write_results(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
