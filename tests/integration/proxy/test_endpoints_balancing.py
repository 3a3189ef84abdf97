"""The balancer on the real data path (docs/endpoints.md): one endpoint of three is 100 ms slower.

``p2c_ewma`` (the default) sends it almost nothing, ``least_request`` favours the fast ones
too (the slow one's calls stay in flight longer), ``round_robin`` gives it its third.

One proxy (through the CLI) has one upstream per policy over the same three real upstream
processes; the slow one sleeps 100 ms before every answer. 12 concurrent grpc.aio loops keep
calls in flight, so the in-flight counts the policies look at matter. Shares are judged over a
span of time after a short settling time, never over the first N calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from tests.integration.proxy._traffic import (
    Replica,
    Traffic,
    served_shares,
    success_rate,
    summary,
)
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

pytestmark = pytest.mark.integration

POLICIES = ("p2c_ewma", "round_robin", "least_request")
SLOW_MS = 100.0
LOOPS = 12
SETTLE_S = 0.5
JUDGED_S = 2.5
EWMA_DECAY_MS = 1000
"""Every endpoint starts at the balancer's default RTT (30 ms) and the estimate moves in time
(not per call): with the default decay of 10 s the fast endpoints still look like ~20 ms a few
seconds in, so the judged span would show the start-up, not the steady state. 1 s lets the
estimates reach the endpoints' real latency within the settling time."""


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Replica]]:
    log_dir = tmp_path_factory.mktemp("replicas")
    with contextlib.ExitStack() as stack:
        found = [Replica(stack.enter_context(UpstreamProcess(log_dir)), name)
                 for name in ("fast1", "fast2", "slow")]
        for replica in found:
            replica.reset()
        found[2].set("*", delay_ms=SLOW_MS)  # every service of this process is slow
        yield found


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory,
            replicas: list[Replica]) -> Iterator[SidecarProcess]:
    endpoints = [r.address for r in replicas]
    config = {"upstreams": {
        policy: {"endpoints": endpoints, "routes": [f"/{policy}."], "balancer": policy,
                 "ewma_decay_ms": EWMA_DECAY_MS, "timeout_ms": 5000}
        for policy in POLICIES
    }}
    with SidecarProcess(tmp_path_factory.mktemp("sidecar"), config) as process:
        yield process


@pytest.fixture
async def channel(sidecar: SidecarProcess) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(sidecar.address) as channel:
        yield channel


async def _slow_share(channel: grpc.aio.Channel, policy: str) -> float:
    """The slow endpoint's share of the calls started in the judged span."""
    async with Traffic(channel, f"/{policy}.Echo/Unary", loops=LOOPS, pause_s=0.01) as traffic:
        await traffic.run_for(SETTLE_S)
        judged = await traffic.run_for(JUDGED_S)
    assert success_rate(judged) == 1.0, summary(judged)
    assert len(judged) >= 100, summary(judged)
    shares = served_shares(judged)
    print(f"{policy}: {summary(judged)}")
    return shares.get("slow", 0.0)


async def test_p2c_ewma_sends_the_slow_endpoint_at_most_a_tenth_of_the_calls(
        channel: grpc.aio.Channel) -> None:
    share = await _slow_share(channel, "p2c_ewma")
    assert share <= 0.10, share


async def test_round_robin_gives_the_slow_endpoint_about_a_third(
        channel: grpc.aio.Channel) -> None:
    share = await _slow_share(channel, "round_robin")
    assert 0.25 <= share <= 0.42, share


async def test_least_request_favours_the_fast_endpoints_too(
        channel: grpc.aio.Channel) -> None:
    share = await _slow_share(channel, "least_request")
    assert share <= 0.2, share
