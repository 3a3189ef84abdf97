"""Hedged calls on the real data path (gRFC A6 hedging; docs/proxy.md).

Three real upstream processes, one of which delays 10% of its calls by 300 ms. Without hedging
a caller's p99 would be ~300 ms (a third of the calls go there, a tenth of those are slow). With
``hedging`` (delay 50 ms), a call that got no answer after 50 ms is sent to another endpoint,
whose answer wins; the slow upstream sees its attempt cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.integration.proxy._calls import server_stream, unary
from tests.integration.proxy._traffic import Replica, Traffic, success_rate, summary
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

pytestmark = pytest.mark.integration

UNARY = "/sidecar.test.Echo/Unary"
DELAY_MS = 300.0
HEDGE_DELAY_MS = 50.0


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Replica]]:
    log_dir = tmp_path_factory.mktemp("replicas")
    with contextlib.ExitStack() as stack:
        found = [Replica(stack.enter_context(UpstreamProcess(log_dir)), name)
                 for name in ("h1", "h2", "slow")]
        for replica in found:
            replica.reset()
        yield found


def _p99(durations: list[float]) -> float:
    ordered = sorted(durations)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def test_hedging_cuts_the_tail_of_a_sometimes_slow_endpoint(
        tmp_path: Path, replicas: list[Replica]) -> None:
    config = {"upstreams": {"svc": {
        "endpoints": [r.address for r in replicas], "routes": ["/sidecar.test.Echo/"],
        "balancer": "round_robin",  # the slow endpoint keeps its third of the first attempts
        "timeout_ms": 5000,
        "hedging": {"methods": [UNARY], "delay_ms": HEDGE_DELAY_MS, "max_attempts": 2},
        "retry": {"methods": ["/sidecar.test.Echo/ServerStream"],
                  "budget": {"ratio": 0.5, "min_per_s": 50}},
    }}}
    with SidecarProcess(tmp_path, config) as sidecar:
        async with grpc.aio.insecure_channel(sidecar.address) as channel:
            await unary(channel, UNARY, timeout=5)
            # the fast p99, measured the same way, with no endpoint slow
            async with Traffic(channel, UNARY, loops=4, pause_s=0.01) as traffic:
                fast = await traffic.run_for(1.5)
            fast_p99 = _p99([c.duration_s for c in fast])
            for replica in replicas:
                replica.process.reset()
                replica.set("*")
            replicas[2].set("*", delay_ms=DELAY_MS, delay_ratio=0.1)
            async with Traffic(channel, UNARY, loops=4, pause_s=0.01) as traffic:
                judged = await traffic.run_for(4.0)
    assert len(judged) >= 300, summary(judged)
    assert success_rate(judged) == 1.0, summary(judged)
    slow = replicas[2].process.method_stats(UNARY)
    delayed = slow["calls"] // 10
    assert delayed >= 10, slow  # enough slow calls that, unhedged, they would be the p99
    p99 = _p99([c.duration_s for c in judged])
    assert p99 < (HEDGE_DELAY_MS + 50.0) / 1000 + fast_p99, (p99, fast_p99, summary(judged))
    # the losing attempts were cancelled, and the slow upstream saw it
    assert slow["cancelled"] >= delayed // 2, slow


async def test_a_hedged_server_stream_is_answered_by_the_fast_endpoint(
        tmp_path: Path, replicas: list[Replica]) -> None:
    stream = "/sidecar.test.Echo/ServerStream"
    fast, _, slow = replicas
    for replica in (fast, slow):
        replica.process.reset()
        replica.set("*")
    slow.set("*", delay_ms=3000.0)
    config = {"upstreams": {"svc": {
        "endpoints": [fast.address, slow.address], "routes": ["/sidecar.test.Echo/"],
        "balancer": "round_robin", "timeout_ms": 5000,
        "hedging": {"methods": [stream], "delay_ms": HEDGE_DELAY_MS, "max_attempts": 2},
    }}}
    with SidecarProcess(tmp_path, config) as sidecar:
        async with grpc.aio.insecure_channel(sidecar.address) as channel:
            await unary(channel, "/sidecar.test.Echo/Unary", timeout=5)
            await asyncio.sleep(0.3)  # the stream's shape, learned by reflection
            for _ in range(4):
                started = time.monotonic()
                outcome = await server_stream(channel, stream, b"h", timeout=5)
                assert outcome.code is grpc.StatusCode.OK, outcome
                assert outcome.messages == [b"h#0", b"h#1", b"h#2"]
                assert time.monotonic() - started < 1.5
    stats = slow.process.method_stats(stream)
    assert stats["calls"] >= 2, stats  # round robin gave it first attempts
    assert stats["cancelled"] == stats["calls"], stats  # every one of them lost
