"""Retries under a budget on the real data path (gRFC A6; docs/proxy.md).

Three real upstream processes; each test starts its own proxy through the CLI with the
``retry`` policy it needs. Faults are spread deterministically by the upstreams
(``failure_ratio`` 0.5 fails every second call), so single calls have known outcomes.
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

from tests.integration.proxy._calls import client_stream, server_stream, unary
from tests.integration.proxy._traffic import Replica, Traffic, success_rate, summary
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

pytestmark = pytest.mark.integration

ECHO = "sidecar.test.Echo"  # described by reflection: native unary / stream handlers
UNARY = f"/{ECHO}/Unary"
STREAM = f"/{ECHO}/ServerStream"
CLIENT_STREAM = f"/{ECHO}/ClientStream"
OTHER = "/retry.Other/Unary"  # routed to the same upstream, not listed in retry.methods
OK = grpc.StatusCode.OK
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
PREVIOUS = "grpc-previous-rpc-attempts"
RATIO = 0.2
MIN_PER_S = 10.0


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Replica]]:
    log_dir = tmp_path_factory.mktemp("replicas")
    with contextlib.ExitStack() as stack:
        yield [Replica(stack.enter_context(UpstreamProcess(log_dir)), name)
               for name in ("r1", "r2", "r3")]


@pytest.fixture
def healthy(replicas: list[Replica]) -> list[Replica]:
    for replica in replicas:
        replica.reset()
    return replicas


def _config(endpoints: list[str], **retry: Any) -> dict[str, Any]:
    policy = {"max_attempts": 3, "methods": [UNARY, STREAM, CLIENT_STREAM],
              "backoff": {"base_ms": 5, "max_ms": 20},
              "budget": {"ratio": RATIO, "min_per_s": MIN_PER_S}, **retry}
    return {"upstreams": {"svc": {
        "endpoints": endpoints, "routes": [f"/{ECHO}/", "/retry.Other/"], "timeout_ms": 5000,
        "retry": policy,
        # the breaker only watches: these tests judge retries, not the breaker's protection
        "breaker": {"mode": "metrics_only"},
    }}}


@contextlib.asynccontextmanager
async def _proxy(tmp_path: Path, config: dict[str, Any]
                 ) -> AsyncIterator[tuple[SidecarProcess, grpc.aio.Channel]]:
    with SidecarProcess(tmp_path, config) as sidecar:
        async with grpc.aio.insecure_channel(sidecar.address) as channel:
            # the proxy learns the shapes by reflection in the background: wait for them
            # (until then a call is forwarded as a bidi stream, also retried)
            await unary(channel, UNARY, timeout=5)
            await asyncio.sleep(0.3)
            yield sidecar, channel


def _fail_every_second(replica: Replica, **faults: Any) -> None:
    """Fail every second call of the Echo service, the next one included: the spread passes
    the first call, so one ``Unary`` call straight to the upstream takes it."""
    replica.process.reset()
    replica.set(code="UNAVAILABLE", failure_ratio=0.5, **faults)
    with grpc.insecure_channel(replica.address) as direct:
        direct.unary_unary(UNARY)(b"prime", timeout=5)


def _calls(replicas: list[Replica], method: str) -> int:
    return sum(r.process.calls(method) for r in replicas)


async def test_one_sick_endpoint_of_three_is_masked_by_retries(
        tmp_path: Path, healthy: list[Replica]) -> None:
    healthy[0].set(code="UNAVAILABLE", failure_ratio=0.3)
    async with _proxy(tmp_path, _config([r.address for r in healthy])) as (_, channel):
        async with Traffic(channel, UNARY, loops=16, pause_s=0.0) as traffic:
            judged = await traffic.run_for(6.0)
    assert len(judged) >= 1500, summary(judged)
    assert success_rate(judged) >= 0.999, summary(judged)
    sick = healthy[0].process.method_stats(UNARY)
    assert sick["calls"] > 50, sick  # the sick endpoint did get calls, and failed some


async def test_every_endpoint_failing_stays_within_the_budget(
        tmp_path: Path, healthy: list[Replica]) -> None:
    for replica in healthy:
        replica.set(code="UNAVAILABLE")
    async with _proxy(tmp_path, _config([r.address for r in healthy])) as (_, channel):
        for replica in healthy:
            replica.process.reset()
            replica.set(code="UNAVAILABLE")
        started = time.monotonic()
        async with Traffic(channel, UNARY, loops=8, pause_s=0.005) as traffic:
            await asyncio.sleep(3.0)
        seconds = time.monotonic() - started
        callers = len(traffic.calls)
    reached = _calls(healthy, UNARY)
    assert success_rate(traffic.calls) == 0.0, summary(traffic.calls)
    assert callers >= 200, summary(traffic.calls)
    # no retry storm: max_attempts 3 alone would send ~3x; the budget bounds the extra. The
    # floor holds up to one second's tokens, which it filled before the traffic started.
    bound = callers * (1 + RATIO) + MIN_PER_S * (seconds + 1.0)
    assert callers < reached <= bound, (callers, reached, bound)


async def test_pushback_delays_the_retry_and_a_negative_one_stops_it(
        tmp_path: Path, healthy: list[Replica]) -> None:
    (only, *_) = healthy
    async with _proxy(tmp_path, _config([only.address])) as (_, channel):
        _fail_every_second(only, pushback_ms="400")
        started = time.monotonic()
        outcome = await unary(channel, UNARY, b"p", timeout=5)
        took = time.monotonic() - started
        assert outcome.code is OK, outcome
        assert took >= 0.4, took  # the server's 400 ms replaced the 5 ms backoff
        assert only.process.calls(UNARY) == 1 + 2
        assert outcome.trailing.get(PREVIOUS) == "1", outcome

        _fail_every_second(only, pushback_ms="-1")
        outcome = await unary(channel, UNARY, b"n", timeout=5)
        assert outcome.code is UNAVAILABLE, outcome
        assert only.process.calls(UNARY) == 1 + 1


async def test_a_method_not_listed_is_never_retried(tmp_path: Path,
                                                    healthy: list[Replica]) -> None:
    async with _proxy(tmp_path, _config([r.address for r in healthy])) as (_, channel):
        for replica in healthy:
            replica.process.reset()
            replica.set("*", code="UNAVAILABLE")
        outcomes = [await unary(channel, OTHER, timeout=5) for _ in range(10)]
        assert all(o.code is UNAVAILABLE for o in outcomes), outcomes
        assert _calls(healthy, OTHER) == 10
        # the listed one, failing the same way, is retried (so the count above could differ)
        await unary(channel, UNARY, timeout=5)
        assert _calls(healthy, UNARY) == 3


async def test_a_server_stream_is_retried_only_before_its_first_message(
        tmp_path: Path, healthy: list[Replica]) -> None:
    (only, *_) = healthy
    async with _proxy(tmp_path, _config([only.address])) as (_, channel):
        _fail_every_second(only, stream_count=3)  # fails before any message
        outcome = await server_stream(channel, STREAM, b"s", timeout=5)
        assert outcome.code is OK, outcome
        assert outcome.messages == [b"s#0", b"s#1", b"s#2"]
        assert only.process.calls(STREAM) == 2
        assert outcome.initial.get(PREVIOUS) == "1", outcome

        only.process.reset()
        only.set(code="UNAVAILABLE", fail_after=1)  # one message, then the failure
        outcome = await server_stream(channel, STREAM, b"t", timeout=5)
        assert outcome.code is UNAVAILABLE, outcome
        assert outcome.messages == [b"t#0"]
        assert only.process.calls(STREAM) == 1


async def test_a_client_stream_retry_replays_the_buffered_messages(
        tmp_path: Path, healthy: list[Replica]) -> None:
    (only, *_) = healthy
    async with _proxy(tmp_path, _config([only.address], buffer_bytes=64)) as (_, channel):
        _fail_every_second(only)
        outcome = await client_stream(channel, CLIENT_STREAM, [b"a", b"bb", b"ccc"], timeout=5)
        assert outcome.code is OK, outcome
        assert outcome.messages == [b"a|bb|ccc"]
        stats = only.process.method_stats(CLIENT_STREAM)
        assert stats["calls"] == 2
        assert [PREVIOUS, "1"] in stats["last_metadata"], stats  # the upstream saw the count

        # more than buffer_bytes sent: the call can no longer be replayed
        _fail_every_second(only)
        outcome = await client_stream(channel, CLIENT_STREAM, [b"x" * 40, b"y" * 40],
                                      timeout=5)
        assert outcome.code is UNAVAILABLE, outcome
        assert only.process.calls(CLIENT_STREAM) == 1
