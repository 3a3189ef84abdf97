"""Outlier ejection on the real data path (docs/endpoints.md): one sick endpoint of three is
ejected while the others serve and the breaker stays CLOSED; every endpoint failing is the
breaker's job.

Three real upstream processes are the endpoints of one upstream; the proxy runs through the
CLI; several grpc.aio loops keep a few hundred calls a second going the whole time. Every
answer names the endpoint that gave it (``x-served-by``), so shares are judged over spans of
time, and waits are on conditions with wall-clock bounds.

How ``sidecar endpoints`` shows an ejection is in test_endpoints_admin.py, with an ejection
that outlasts the test: here it lasts 2 s, less than the CLI may take to start on a busy
machine, so the ejection is read through the admin API (ListEndpoints) instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from sidecar.v1 import admin_pb2, events_pb2
from tests.integration.proxy._traffic import (
    ACTIVE,
    EJECTED,
    UNAVAILABLE,
    Admin,
    Replica,
    Traffic,
    eventually,
    served_shares,
    success_rate,
    summary,
)
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

pytestmark = pytest.mark.integration

CLOSED = events_pb2.BREAKER_STATE_CLOSED
OPEN = events_pb2.BREAKER_STATE_OPEN
BASE_EJECTION_S = 2.0
LOOPS = 8
SERVICE_MS = 5.0
"""Every replica takes this long per call: equal replicas, whatever the scheduler does."""


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
        replica.set(delay_ms=SERVICE_MS)
    return found


def _config(replicas: list[Replica], outlier: dict[str, Any],
            breaker: dict[str, Any]) -> dict[str, Any]:
    return {"upstreams": {"ep": {
        "endpoints": [r.address for r in replicas], "routes": ["/sidecar.test."],
        "balancer": "p2c_ewma", "ewma_decay_ms": 1000, "timeout_ms": 3000,
        "outlier_detection": outlier, "breaker": breaker,
    }}}


def _wall(stamp: Any) -> float:
    return float(stamp.ToNanoseconds()) / 1e9


class BreakerWatch:
    """Reads the upstream's breaker every 50 ms while the test runs."""

    def __init__(self, admin: Admin, name: str) -> None:
        self._admin = admin
        self._name = name
        self.states: list[int] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.states.append((await self._admin.breaker(self._name)).state)
            await asyncio.sleep(0.05)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[BreakerWatch]:
        self._task = asyncio.create_task(self._run())
        try:
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def test_a_failing_endpoint_is_ejected_the_others_serve_and_it_returns_after_its_time(
        tmp_path: Path, replicas: list[Replica]) -> None:
    a, b, c = replicas
    config = _config(
        replicas,
        outlier={"consecutive_failures": 5, "base_ejection_ms": BASE_EJECTION_S * 1000,
                 "max_ejection_ms": 10_000, "interval_ms": 30_000},
        # The rate rule guards the service as a whole; "5 in a row" of the whole upstream is
        # left out because which calls complete in a row is up to the scheduler.
        breaker={"consecutive_failures": None, "failure_rate": 0.5})
    with SidecarProcess(tmp_path, config) as sidecar:
        async with (grpc.aio.insecure_channel(sidecar.address) as channel,
                    Admin(sidecar.admin_address) as admin,
                    BreakerWatch(admin, "ep").running() as watch,
                    Traffic(channel, loops=LOOPS) as traffic):
            # 1. Three healthy endpoints share the calls.
            healthy = await traffic.run_for(2.0)
            shares = served_shares(healthy)
            print("healthy:", summary(healthy))
            assert len(healthy) >= 60, summary(healthy)
            assert success_rate(healthy) == 1.0, summary(healthy)
            for replica in replicas:
                assert 0.15 <= shares.get(replica.name, 0.0) <= 0.55, summary(healthy)

            # 2. b fails every call: it is ejected, and while it is out callers see success.
            failing_from = time.time()
            b.set(code="UNAVAILABLE", details="b is sick", delay_ms=SERVICE_MS)

            async def b_ejected() -> admin_pb2.EndpointInfo | None:
                info = (await admin.endpoints("ep"))[b.address]
                return info if info.state == EJECTED else None

            info = await eventually(b_ejected, timeout_s=10, interval_s=0.02, what="b ejected")
            seen, seen_wall = time.monotonic(), time.time()
            until = _wall(info.ejected_until)
            # Out for base_ejection_ms (the first ejection in a row), from after it failed.
            assert info.ejections_in_a_row == 1 and info.failures >= 5, info
            assert failing_from + BASE_EJECTION_S - 0.05 <= until
            assert until <= seen_wall + BASE_EJECTION_S + 0.05
            others = await admin.endpoints("ep")
            assert others[a.address].state == ACTIVE and others[c.address].state == ACTIVE
            assert others[b.address].state == EJECTED

            # Still sick for most of its time out, then healed before its time is up.
            await asyncio.sleep(max(0.0, until - time.time() - 0.7))
            healed = time.monotonic()
            b.set(delay_ms=SERVICE_MS)
            while_out = traffic.between(seen, healed)
            print(f"ejected {seen_wall - failing_from:.3f}s after b turned; while out:",
                  summary(while_out))
            assert len(while_out) >= 30, summary(while_out)
            assert success_rate(while_out) >= 0.99, summary(while_out)
            assert not any(call.served_by == b.name for call in while_out), summary(while_out)

            # 3. It comes back when its time is up, not before.
            async def b_active() -> bool:
                return (await admin.endpoints("ep"))[b.address].state == ACTIVE

            await eventually(b_active, timeout_s=until - time.time() + 3, interval_s=0.02,
                             what="b back")
            back, back_wall = time.monotonic(), time.time()
            assert back_wall >= until - 0.05
            not_yet = traffic.between(seen, seen + (until - seen_wall) - 0.05)
            assert not any(call.served_by == b.name for call in not_yet), summary(not_yet)
            assert success_rate(traffic.between(seen, back)) >= 0.99

            # 4. ... and gets calls again.
            async def b_serves_again() -> float | None:
                now = time.monotonic()
                if now - back < 0.5:
                    return None  # judge a span of at least half a second
                share = served_shares(traffic.between(max(back, now - 1.0))).get(b.name, 0.0)
                return share if share >= 0.1 else None

            share = await eventually(b_serves_again, timeout_s=6, what="b gets calls again")
            print(f"back {back_wall - until:+.3f}s after ejected_until; share {share:.2f} "
                  f"{time.monotonic() - back:.2f}s later")
            assert (await admin.endpoints("ep"))[b.address].state == ACTIVE

        assert watch.states and set(watch.states) == {CLOSED}
        breaker = sidecar.breaker("ep")
        assert breaker.state == CLOSED and breaker.trip_streak == 0


async def test_when_every_endpoint_fails_ejection_stops_at_the_percent_limit_and_the_breaker_opens(
        tmp_path: Path, replicas: list[Replica]) -> None:
    config = _config(
        replicas,
        outlier={"consecutive_failures": 5, "base_ejection_ms": 30_000,
                 "max_ejection_percent": 50},  # 3 endpoints: at most 1 out
        breaker={"window": {"type": "count", "size": 100}, "minimum_calls": 100,
                 "failure_rate": 0.5, "consecutive_failures": None,
                 "open": {"base_ms": 30_000, "jitter": 0}})
    with SidecarProcess(tmp_path, config) as sidecar:
        async with (grpc.aio.insecure_channel(sidecar.address) as channel,
                    Admin(sidecar.admin_address) as admin,
                    Traffic(channel, loops=LOOPS) as traffic):
            warm = await traffic.run_for(0.5)
            assert success_rate(warm) == 1.0, summary(warm)
            samples: list[tuple[int, int]] = []  # (ejected, active)

            async def sample() -> None:
                while True:
                    states = [i.state for i in (await admin.endpoints("ep")).values()]
                    samples.append((states.count(EJECTED), states.count(ACTIVE)))
                    await asyncio.sleep(0.02)

            before = await admin.endpoints("ep")
            sampler = asyncio.create_task(sample())
            try:
                failing_from = time.monotonic()
                for replica in replicas:
                    replica.set(code="UNAVAILABLE", details="all down", delay_ms=SERVICE_MS)

                async def breaker_open() -> bool:
                    return (await admin.breaker("ep")).state == OPEN

                await eventually(breaker_open, timeout_s=10, what="breaker open")
                opened = time.monotonic()
                after = await traffic.run_for(0.5)
            finally:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler

            failing = traffic.between(failing_from, opened)
            print(f"breaker open {opened - failing_from:.2f}s after all turned;",
                  summary(failing), "; after:", summary(after), "; max ejected",
                  max(e for e, _ in samples), "in", len(samples), "samples")
            endpoints = await admin.endpoints("ep")
            breaker = await admin.breaker("ep")

        # Ejection went as far as the limit and no further, at every moment.
        assert samples, "no ListEndpoints sample"
        assert max(ejected for ejected, _ in samples) == 1, samples
        assert min(active for _, active in samples) >= 2, samples
        states = sorted(info.state for info in endpoints.values())
        assert states == sorted([ACTIVE, ACTIVE, EJECTED]), endpoints
        for address, info in endpoints.items():
            # Every endpoint failed past the threshold (5 in a row): the ones left in were
            # refused ejection by the limit, not spared. (Successes: calls already in flight
            # when the replicas turned, at most one per loop.)
            calls = info.calls - before[address].calls
            failures = info.failures - before[address].failures
            assert failures >= 5 and calls - failures <= LOOPS, (address, calls, failures)
        # The service as a whole failing is the breaker's job.
        assert breaker.last_transition.reason == "failure_rate"
        assert any(call.code == UNAVAILABLE and call.served_by for call in failing)
        assert after and all(call.breaker_open and call.served_by is None for call in after), \
            summary(after)
