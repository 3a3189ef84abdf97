"""Endpoint discovery at run time on the real data path (docs/endpoints.md): an endpoints file
edited while calls flow, and DNS records served by a resolver the test controls.

Real upstream processes, the proxy through the CLI, several grpc.aio loops calling all the
time. ``round_robin`` keeps the balancer out of the question: an endpoint in the set gets every
third call, so "it gets calls" is about discovery only. Every wait is on a condition with a
wall-clock bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from sidecar.v1 import events_pb2
from tests.integration.proxy._traffic import (
    OK,
    UNAVAILABLE,
    Admin,
    Call,
    Replica,
    Traffic,
    call_once,
    eventually,
    served_shares,
    success_rate,
    summary,
    write_endpoints_file,
)
from tests.support.dns import DnsServer
from tests.support.procs import free_port
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

pytestmark = pytest.mark.integration

POLL_MS = 250
SLOW_METHOD = "/slow.Echo/Unary"
SLOW_MS = 2000.0
CLOSED = events_pb2.BREAKER_STATE_CLOSED


def _upstream(discovery: dict[str, Any]) -> dict[str, Any]:
    return {"upstreams": {"disc": {
        "discovery": discovery, "routes": ["/sidecar.test.", "/slow."],
        "balancer": "round_robin", "timeout_ms": 5000,
    }}}


async def _served_by(admin: Admin) -> set[str]:
    return set(await admin.endpoints("disc"))


# --- an endpoints file ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[UpstreamProcess]]:
    log_dir = tmp_path_factory.mktemp("replicas")
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(UpstreamProcess(log_dir)) for _ in range(3)]


@pytest.fixture
def replicas(processes: list[UpstreamProcess]) -> list[Replica]:
    found = [Replica(process, name) for process, name in zip(processes, "abc", strict=True)]
    for replica in found:
        replica.reset()
    return found


async def test_an_edited_file_adds_an_endpoint_within_a_poll_and_removes_one_as_its_calls_finish(
        tmp_path: Path, replicas: list[Replica]) -> None:
    a, b, c = replicas
    path = tmp_path / "endpoints.txt"
    write_endpoints_file(path, ["# the disc replicas", a.address, b.address])
    config = _upstream({"file": str(path), "poll_ms": POLL_MS})
    with SidecarProcess(tmp_path, config) as sidecar:
        async with (grpc.aio.insecure_channel(sidecar.address) as channel,
                    Admin(sidecar.admin_address) as admin,
                    Traffic(channel, loops=8) as traffic):
            first = await traffic.run_for(1.0)
            assert success_rate(first) == 1.0, summary(first)
            assert set(served_shares(first)) == {"a", "b"}, summary(first)

            # 1. Added: it gets calls within one poll (plus generous slack for a busy machine).
            written = time.monotonic()
            write_endpoints_file(path, [a.address, b.address, c.address])

            async def first_call_to_c() -> Call | None:
                return next((call for call in traffic.between(written)
                             if call.served_by == "c"), None)

            joined = await eventually(first_call_to_c, timeout_s=5, what="a call to c")
            print(f"c got its first call {joined.started - written:.3f}s after the write "
                  f"(poll {POLL_MS} ms)")
            assert joined.started - written <= POLL_MS / 1000 + 0.75
            assert await _served_by(admin) == {a.address, b.address, c.address}
            settled = await traffic.run_for(1.0)
            shares = served_shares(settled)
            assert all(0.25 <= shares.get(name, 0.0) <= 0.42 for name in "abc"), summary(settled)

            # 2. Removed while some of its calls are in flight: those finish OK, and no new
            # call reaches it.
            for replica in replicas:
                replica.set("slow.Echo", delay_ms=SLOW_MS)
            slow_calls: list[asyncio.Task[Call]] = []

            def c_slow_in_flight() -> int:
                return int(c.process.method_stats(SLOW_METHOD).get("in_flight", 0))

            deadline = time.monotonic() + 5
            while c_slow_in_flight() == 0:
                assert time.monotonic() < deadline, "no slow call reached c"
                slow_calls += [asyncio.create_task(call_once(channel, SLOW_METHOD))
                               for _ in range(3)]
                await asyncio.sleep(0.1)
            removing = time.monotonic()
            write_endpoints_file(path, [a.address, b.address])

            async def c_gone() -> bool:
                return await _served_by(admin) == {a.address, b.address}

            await eventually(c_gone, timeout_s=5, what="c removed")
            removed = time.monotonic()
            done = await asyncio.wait_for(asyncio.gather(*slow_calls), SLOW_MS / 1000 + 10)
            on_c = [call for call in done if call.served_by == "c"]
            assert on_c, summary(done)
            assert all(call.code == OK for call in done), summary(done)
            # ... and they were in flight across the removal: sent before, answered after.
            assert all(call.started < removing and call.ended > removed for call in on_c)
            after = await traffic.run_for(1.0)
            since = traffic.between(removed)
            assert success_rate(after) == 1.0, summary(after)
            assert not any(call.served_by == "c" for call in since), summary(since)
            print(f"removed {removed - removing:.3f}s after the write; {len(on_c)} slow calls "
                  f"on c finished OK after it; since: {summary(since)}")


async def test_a_bad_file_keeps_the_last_good_set_and_an_empty_one_fails_calls_fast(
        tmp_path: Path, replicas: list[Replica]) -> None:
    a, b, _ = replicas
    path = tmp_path / "endpoints.txt"
    write_endpoints_file(path, [a.address, b.address])
    config = _upstream({"file": str(path), "poll_ms": POLL_MS})
    with SidecarProcess(tmp_path, config) as sidecar:
        async with (grpc.aio.insecure_channel(sidecar.address) as channel,
                    Admin(sidecar.admin_address) as admin,
                    Traffic(channel, loops=8) as traffic):
            await traffic.run_for(0.5)
            before = (await admin.upstream_endpoints("disc")).refresh_failures

            # 1. A bad line: the file is refused as a whole, the last good set stays.
            write_endpoints_file(path, [a.address, "not-an-endpoint", b.address])
            bad = time.monotonic()

            async def refused() -> bool:
                return (await admin.upstream_endpoints("disc")).refresh_failures > before

            await eventually(refused, timeout_s=5, what="the bad file refused")
            assert await _served_by(admin) == {a.address, b.address}
            kept = await traffic.run_for(0.75)
            assert success_rate(traffic.between(bad)) == 1.0, summary(traffic.between(bad))
            assert set(served_shares(kept)) == {"a", "b"}, summary(kept)
            sidecar.wait_for_log("line 2", timeout_s=5)  # logged, naming the line

            # 2. An empty file (only a comment): no endpoints, calls fail fast saying so, and the
            # breaker counts none of them (nothing was sent).
            write_endpoints_file(path, ["# drained"])

            async def none_left() -> bool:
                return not await _served_by(admin)

            await eventually(none_left, timeout_s=5, what="the empty set applied")
            emptied = time.monotonic()
            failing = await traffic.run_for(0.75)
            assert len(failing) >= 20, summary(failing)
            assert all(call.code == UNAVAILABLE and call.served_by is None for call in failing), \
                summary(failing)
            expected = f"upstream 'disc' has no endpoints (file {path} returned none)"
            assert all(call.details == expected for call in failing), failing[0].details
            slowest = max(call.duration_s for call in failing)
            print(f"empty set: {summary(failing)}; slowest {slowest * 1000:.1f} ms; "
                  f"{failing[0].details!r}")
            assert slowest < 0.5  # the upstream's timeout is 5 s: nobody waited for it
            assert (await admin.breaker("disc")).state == CLOSED

            # 3. The file gone: still none, and now the message says why.
            before = (await admin.upstream_endpoints("disc")).refresh_failures
            path.unlink()
            await eventually(refused, timeout_s=5, what="the missing file counted")
            outcome = await call_once(channel)
            assert outcome.code == UNAVAILABLE
            assert outcome.details == (f"upstream 'disc' has no endpoints "
                                       f"(file {path}: no such file)")

            # 4. A good file again: calls flow again.
            write_endpoints_file(path, [a.address])

            async def back() -> bool:
                return await _served_by(admin) == {a.address}

            await eventually(back, timeout_s=5, what="a back")
            again = await traffic.run_for(0.5)
            assert success_rate(again) == 1.0 and set(served_shares(again)) == {"a"}, \
                summary(again)
            assert emptied < time.monotonic()


# --- DNS ------------------------------------------------------------------------------------

NAME = "orders.test"
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
REFRESH_MS = 200


@pytest.fixture(scope="module")
def dns_replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Replica]]:
    """Three upstream processes on one port, on 127.0.0.2/.3/.4: the A records of one name."""
    log_dir = tmp_path_factory.mktemp("dns-replicas")
    for _attempt in range(3):
        port = free_port()
        with contextlib.ExitStack() as stack:
            try:
                started = {host: Replica(stack.enter_context(
                    UpstreamProcess(log_dir, host=host, port=port)), host) for host in HOSTS}
            except (RuntimeError, TimeoutError):
                continue  # the port was taken on one of the addresses meanwhile: another
            for replica in started.values():
                replica.reset()
            yield started
            return
    raise RuntimeError("could not start the replicas on one port")


async def test_dns_discovery_follows_the_records_and_keeps_the_last_good_set_on_servfail(
        tmp_path: Path, dns_replicas: dict[str, Replica]) -> None:
    r2, r3, r4 = (dns_replicas[host] for host in HOSTS)
    port = r2.process.port
    with DnsServer() as dns:
        dns.set_records(NAME, [r2.host, r3.host])
        resolver = f"{dns.address[0]}:{dns.address[1]}"
        config = _upstream({"dns": f"{NAME}:{port}", "refresh_ms": REFRESH_MS,
                            "resolver": resolver})
        with SidecarProcess(tmp_path, config) as sidecar:
            async with (grpc.aio.insecure_channel(sidecar.address) as channel,
                        Admin(sidecar.admin_address) as admin,
                        Traffic(channel, loops=8) as traffic):

                async def endpoints_are(*replicas: Replica) -> bool:
                    return await _served_by(admin) == {r.address for r in replicas}

                assert await endpoints_are(r2, r3)  # resolved before the proxy served
                assert (await admin.upstream_endpoints("disc")).source == "dns"
                first = await traffic.run_for(0.75)
                assert success_rate(first) == 1.0, summary(first)
                assert set(served_shares(first)) == {r2.name, r3.name}, summary(first)

                # 1. A record added: the new endpoint gets calls within a refresh or so.
                changed = time.monotonic()
                dns.set_records(NAME, [r2.host, r3.host, r4.host])

                async def call_to_r4() -> Call | None:
                    return next((call for call in traffic.between(changed)
                                 if call.served_by == r4.name), None)

                joined = await eventually(call_to_r4, timeout_s=5, what="a call to .4")
                print(f"dns: .4 got its first call {joined.started - changed:.3f}s after the "
                      f"record was added (refresh {REFRESH_MS} ms)")
                assert joined.started - changed <= REFRESH_MS / 1000 + 0.75
                assert await endpoints_are(r2, r3, r4)

                # 2. A record removed: no new call reaches it.
                dns.set_records(NAME, [r3.host, r4.host])
                await eventually(lambda: endpoints_are(r3, r4), timeout_s=5, what=".2 removed")
                removed = time.monotonic()
                after = await traffic.run_for(0.75)
                assert set(served_shares(after)) == {r3.name, r4.name}, summary(after)
                assert success_rate(traffic.between(changed)) == 1.0

                # 3. SERVFAIL: every refresh fails, the last good set stays, calls keep working.
                before = (await admin.upstream_endpoints("disc")).refresh_failures
                dns.fail("SERVFAIL")
                failing_from = time.monotonic()

                async def refreshes_failed() -> bool:
                    found = await admin.upstream_endpoints("disc")
                    return found.refresh_failures >= before + 3

                await eventually(refreshes_failed, timeout_s=5, what="3 failed refreshes")
                print("dns: while SERVFAIL:", summary(traffic.between(failing_from)))
                assert await endpoints_are(r3, r4)
                kept = traffic.between(failing_from)
                assert success_rate(kept) == 1.0, summary(kept)
                assert set(served_shares(kept)) == {r3.name, r4.name}, summary(kept)

                # 4. Answering again, with no records: no endpoints, calls fail fast saying so.
                dns.set_records(NAME, [])
                dns.serve()
                await eventually(lambda: endpoints_are(), timeout_s=5, what="an empty set")
                outcome = await call_once(channel)
                assert outcome.code == UNAVAILABLE and outcome.served_by is None
                assert outcome.details == (f"upstream 'disc' has no endpoints "
                                           f"(dns {NAME}:{port} via {resolver} returned none)")
                assert outcome.duration_s < 0.5

                # 5. ... and back.
                dns.set_records(NAME, [r2.host])
                await eventually(lambda: endpoints_are(r2), timeout_s=5, what=".2 back")
                await traffic.stop()
                assert removed < failing_from
                last = (await call_once(channel))
                assert last.code == OK and last.served_by == r2.name, last
