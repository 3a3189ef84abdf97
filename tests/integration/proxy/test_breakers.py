"""Breakers, fallbacks and the concurrency limit on the real data path.

Each upstream entry below routes a different service prefix to the same upstream process, so
each test has its own breaker and its own fault switches.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from sidecar.v1 import events_pb2
from tests.integration.proxy._calls import (
    Outcome,
    client_stream,
    server_stream,
    unary,
    wait_until,
)
from tests.support.procs import free_port
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

pytestmark = pytest.mark.integration

OPEN = events_pb2.BREAKER_STATE_OPEN
CLOSED = events_pb2.BREAKER_STATE_CLOSED
HALF_OPEN = events_pb2.BREAKER_STATE_HALF_OPEN
LONG_OPEN = {"base_ms": 30000, "jitter": 0}


def _breaker(size: int = 4, open_: dict[str, float] | None = None, **extra: object) -> dict:
    return {"window": {"type": "count", "size": size}, "minimum_calls": size,
            "failure_rate": 0.5, "consecutive_failures": None,
            "open": open_ or LONG_OPEN, **extra}


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory,
            upstream: UpstreamProcess) -> Iterator[SidecarProcess]:
    address = upstream.address
    config = {
        "upstreams": {
            "trip": {"address": address, "routes": ["/trip."], "breaker": _breaker()},
            "probe": {"address": address, "routes": ["/probe."],
                      "breaker": _breaker(open_={"base_ms": 400, "jitter": 0},
                                          half_open_probes=2, slow_call_ms=10000)},
            "again": {"address": address, "routes": ["/again."],
                      "breaker": _breaker(size=2, open_={"base_ms": 300, "multiplier": 10,
                                                         "jitter": 0},
                                          half_open_probes=1)},
            "per": {"address": address, "routes": ["/per."], "per_method": True,
                    "breaker": _breaker(size=2)},
            "fb_status": {"address": address, "routes": ["/fbs."], "breaker": _breaker(),
                          "fallback": {"status": "FAILED_PRECONDITION",
                                       "message": "payments degraded, try later"}},
            "fb_primary": {"address": f"127.0.0.1:{free_port()}",  # nothing listens there
                           "routes": ["/fbu."], "breaker": _breaker(size=2),
                           "fallback": {"upstream": "fb_backup"}},
            "fb_backup": {"address": address, "routes": ["/backup."]},
            "limited": {"address": address, "routes": ["/lim."], "max_concurrent_requests": 3},
        },
    }
    with SidecarProcess(tmp_path_factory.mktemp("sidecar"), config) as process:
        yield process


@pytest.fixture
async def channel(sidecar: SidecarProcess) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(sidecar.address) as channel:
        yield channel


async def _fail_until_open(channel: grpc.aio.Channel, sidecar: SidecarProcess, breaker: str,
                           method: str, calls: int) -> None:
    for _ in range(calls):
        outcome = await unary(channel, method)
        assert outcome.code == grpc.StatusCode.UNAVAILABLE
        assert not outcome.breaker_rejected
    assert sidecar.breaker(breaker).state == OPEN


def _assert_rejected_by_breaker(outcome: Outcome, upstream: str, max_retry_ms: int) -> None:
    assert outcome.code == grpc.StatusCode.UNAVAILABLE
    assert outcome.trailing["x-sidecar-breaker"] == "open"
    assert outcome.trailing["x-sidecar-upstream"] == upstream
    assert 0 < int(outcome.trailing["x-sidecar-retry-after-ms"]) <= max_retry_ms
    assert "circuit breaker" in outcome.details


async def test_open_breaker_rejects_every_shape_without_touching_upstream(
        channel: grpc.aio.Channel, sidecar: SidecarProcess, upstream: UpstreamProcess) -> None:
    upstream.configure("trip.Echo", code="UNAVAILABLE", details="down for maintenance")
    await _fail_until_open(channel, sidecar, "trip", "/trip.Echo/Unary", 4)
    before = upstream.stats()

    rejected = [
        *[await unary(channel, "/trip.Echo/Unary") for _ in range(5)],
        await server_stream(channel, "/trip.Echo/ServerStream"),
        await client_stream(channel, "/trip.Echo/ClientStream", [b"a", b"b"]),
    ]

    for outcome in rejected:
        _assert_rejected_by_breaker(outcome, "trip", max_retry_ms=30000)
    assert upstream.stats() == before  # not one of those calls reached the upstream
    info = sidecar.breaker("trip")
    assert info.last_transition.reason == "failure_rate"
    assert info.window.failures == 4


async def test_half_open_admits_at_most_the_probe_count_of_fifty_callers_then_recovers(
        channel: grpc.aio.Channel, sidecar: SidecarProcess, upstream: UpstreamProcess) -> None:
    method = "/probe.Echo/Unary"
    upstream.configure("probe.Echo", code="UNAVAILABLE")
    await _fail_until_open(channel, sidecar, "probe", method, 4)
    # Healthy again, but slow (1.5 s, below slow_call_ms): the probes are still in flight
    # while every one of the 50 callers arrives, however slow the machine.
    upstream.configure("probe.Echo", delay_ms=1500)
    await asyncio.sleep(sidecar.breaker("probe").open_duration_ms / 1000 + 0.1)
    before = upstream.calls(method)

    outcomes = await asyncio.gather(*(unary(channel, method) for _ in range(50)))

    reached = upstream.calls(method) - before
    admitted = [o for o in outcomes if o.code == grpc.StatusCode.OK]
    rejected = [o for o in outcomes if o.breaker_rejected]
    assert 1 <= reached <= 2  # half_open_probes: 2
    assert len(admitted) == reached
    assert len(rejected) == 50 - reached
    # Recovery: healthy probes close the breaker, then everything flows again.
    for _ in range(20):
        if sidecar.breaker("probe").state == CLOSED:
            break
        await unary(channel, method)
    info = sidecar.breaker("probe")
    assert info.state == CLOSED
    assert info.last_transition.reason == "probes_healthy"
    upstream.configure("probe.Echo", delay_ms=10)
    outcomes = await asyncio.gather(*(unary(channel, method) for _ in range(10)))
    assert all(o.code == grpc.StatusCode.OK for o in outcomes)


async def test_second_trip_in_a_row_opens_for_longer(
        channel: grpc.aio.Channel, sidecar: SidecarProcess, upstream: UpstreamProcess) -> None:
    method = "/again.Echo/Unary"
    upstream.configure("again.Echo", code="UNAVAILABLE")
    await _fail_until_open(channel, sidecar, "again", method, 2)
    first = sidecar.breaker("again")
    assert (first.trip_streak, first.open_duration_ms) == (1, 300)

    await asyncio.sleep(0.4)  # open period over: the next call is a probe, and it fails
    outcome = await unary(channel, method)
    assert outcome.code == grpc.StatusCode.UNAVAILABLE and not outcome.breaker_rejected

    second = sidecar.breaker("again")
    assert second.state == OPEN
    assert second.last_transition.reason == "probe_failed"
    assert (second.trip_streak, second.open_duration_ms) == (2, 3000)  # 300 ms x 10
    await asyncio.sleep(0.4)  # past the first duration, well inside the second
    _assert_rejected_by_breaker(await unary(channel, method), "again", max_retry_ms=3000)


async def test_per_method_breakers_trip_one_method_only(
        channel: grpc.aio.Channel, sidecar: SidecarProcess, upstream: UpstreamProcess) -> None:
    upstream.configure("per.Broken", code="INTERNAL")
    await _fail_until_open_code(channel, "/per.Broken/Unary", grpc.StatusCode.INTERNAL, 2)

    assert (await unary(channel, "/per.Broken/Unary")).breaker_rejected
    assert (await unary(channel, "/per.Fine/Unary")).code == grpc.StatusCode.OK
    assert sidecar.breaker("per/per.Broken/Unary").state == OPEN
    assert sidecar.breaker("per/per.Fine/Unary").state == CLOSED


async def _fail_until_open_code(channel: grpc.aio.Channel, method: str,
                                code: grpc.StatusCode, calls: int) -> None:
    for _ in range(calls):
        assert (await unary(channel, method)).code == code


async def test_status_fallback_answers_while_open(
        channel: grpc.aio.Channel, sidecar: SidecarProcess, upstream: UpstreamProcess) -> None:
    upstream.configure("fbs.Echo", code="UNAVAILABLE")
    await _fail_until_open(channel, sidecar, "fb_status", "/fbs.Echo/Unary", 4)
    before = upstream.calls("/fbs.Echo/Unary")

    outcome = await unary(channel, "/fbs.Echo/Unary")

    assert outcome.code == grpc.StatusCode.FAILED_PRECONDITION
    assert outcome.details == "payments degraded, try later"
    assert outcome.trailing["x-sidecar-fallback"] == "status"
    assert outcome.trailing["x-sidecar-breaker"] == "open"
    assert upstream.calls("/fbs.Echo/Unary") == before


async def test_upstream_fallback_answers_through_its_own_breaker(
        channel: grpc.aio.Channel, sidecar: SidecarProcess, upstream: UpstreamProcess) -> None:
    # fb_primary points at a port nobody listens on: its calls fail until its breaker opens.
    for _ in range(2):
        assert (await unary(channel, "/fbu.Echo/Unary")).code == grpc.StatusCode.UNAVAILABLE
    assert sidecar.breaker("fb_primary").state == OPEN

    outcome = await unary(channel, "/fbu.Echo/Unary", b"order-1")

    assert outcome.code == grpc.StatusCode.OK
    assert outcome.messages == [b"order-1"]  # answered by fb_backup's address
    assert outcome.trailing["x-sidecar-fallback"] == "upstream"
    assert upstream.calls("/fbu.Echo/Unary") == 1
    assert sidecar.breaker("fb_backup").window.calls == 1


async def test_calls_over_the_concurrency_limit_are_refused_at_once(
        channel: grpc.aio.Channel, sidecar: SidecarProcess, upstream: UpstreamProcess) -> None:
    upstream.configure("lim.Echo", delay_ms=1500)  # all 10 arrive while 3 are in flight

    outcomes = await asyncio.gather(*(unary(channel, "/lim.Echo/Unary") for _ in range(10)))

    served = [o for o in outcomes if o.code == grpc.StatusCode.OK]
    refused = [o for o in outcomes if o.code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert len(served) == 3 and len(refused) == 7
    for outcome in refused:
        assert outcome.trailing["x-sidecar-overflow"] == "true"
        assert outcome.trailing["x-sidecar-upstream"] == "limited"
    stats = upstream.method_stats("/lim.Echo/Unary")
    assert stats["calls"] == 3 and stats["max_in_flight"] == 3
    # Refusals are the sidecar's own doing: the breaker does not count them as failures.
    window = sidecar.breaker("limited").window
    assert (window.calls, window.failures) == (3, 0)


async def test_limit_frees_its_slots_when_calls_end(
        channel: grpc.aio.Channel, upstream: UpstreamProcess) -> None:
    upstream.configure("lim.Again", delay_ms=50)
    for _ in range(3):
        outcomes = await asyncio.gather(*(unary(channel, "/lim.Again/Unary") for _ in range(3)))
        assert all(o.code == grpc.StatusCode.OK for o in outcomes)
    await wait_until(lambda: upstream.method_stats("/lim.Again/Unary")["in_flight"] == 0)
