"""Library mode: the same breakers as in-process client interceptors (grpc.aio and sync grpc),
against the real upstream process. The app's channel talks to the upstream directly."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
import yaml

from sidecar.breaker import State
from sidecar.config import parse_config
from sidecar.interceptor import Protection
from tests.integration.proxy._calls import client_stream, server_stream, unary
from tests.support.upstream import UpstreamProcess

pytestmark = pytest.mark.integration

BREAKER = {"window": {"size": 2}, "minimum_calls": 2, "consecutive_failures": None,
           "open": {"base_ms": 60000, "jitter": 0}}


def _protection(upstream: UpstreamProcess, **upstreams: dict[str, Any]) -> Protection:
    config = {"service": "app", "upstreams": {
        name: {"address": upstream.address, **spec} for name, spec in upstreams.items()}}
    return Protection(parse_config(yaml.safe_dump(config)))


@pytest.fixture
async def aio(upstream: UpstreamProcess) -> AsyncIterator[tuple[Protection, grpc.aio.Channel]]:
    protection = _protection(
        upstream,
        shapes={"routes": ["/ishape."], "breaker": {"mode": "metrics_only"}},
        itrip={"routes": ["/itrip."], "breaker": BREAKER},
        iprobe={"routes": ["/iprobe."], "breaker": {
            **BREAKER, "open": {"base_ms": 300, "jitter": 0}, "half_open_probes": 2,
            "slow_call_ms": 10000}},
        istream={"routes": ["/istream."], "breaker": BREAKER},
        ifallback={"routes": ["/ifb."], "breaker": BREAKER,
                   "fallback": {"status": "FAILED_PRECONDITION", "message": "degraded"}},
        ilimit={"routes": ["/ilim."], "max_concurrent_requests": 2},
        ideadline={"routes": ["/ideadline."], "timeout_ms": 1500},
    )
    channel = grpc.aio.insecure_channel(upstream.address,
                                        interceptors=protection.aio_interceptors())
    async with channel:
        yield protection, channel


async def test_aio_interceptors_pass_all_four_shapes_through(
        aio: tuple[Protection, grpc.aio.Channel]) -> None:
    protection, channel = aio
    assert (await unary(channel, "/ishape.E/Unary", b"u")).messages == [b"u"]
    assert (await server_stream(channel, "/ishape.E/ServerStream", b"s")).messages == [
        b"s#0", b"s#1", b"s#2"]
    assert (await client_stream(channel, "/ishape.E/ClientStream", [b"a", b"b"])).messages == [
        b"a|b"]
    bidi = channel.stream_stream("/ishape.E/Bidi")(iter([b"1", b"2"]))
    assert [m async for m in bidi] == [b"1", b"2"]
    await asyncio.sleep(0.05)  # stream outcomes are settled from the calls' done callbacks
    assert protection.breakers.get("shapes").view().snapshot.calls == 4  # type: ignore[union-attr]


async def test_aio_open_breaker_rejects_in_process_without_touching_upstream(
        aio: tuple[Protection, grpc.aio.Channel], upstream: UpstreamProcess) -> None:
    protection, channel = aio
    upstream.configure("itrip.E", code="UNAVAILABLE")
    for _ in range(2):
        assert (await unary(channel, "/itrip.E/Unary")).code == grpc.StatusCode.UNAVAILABLE
    assert protection.breakers.get("itrip").state is State.OPEN  # type: ignore[union-attr]
    before = upstream.stats()

    outcomes = [await unary(channel, "/itrip.E/Unary"),
                await server_stream(channel, "/itrip.E/ServerStream"),
                await client_stream(channel, "/itrip.E/ClientStream", [b"x"])]

    for outcome in outcomes:
        assert outcome.code == grpc.StatusCode.UNAVAILABLE
        assert outcome.trailing["x-sidecar-breaker"] == "open"
        assert outcome.trailing["x-sidecar-upstream"] == "itrip"
        assert int(outcome.trailing["x-sidecar-retry-after-ms"]) > 0
    assert upstream.stats() == before


async def test_aio_half_open_admits_at_most_the_probes_then_recovers(
        aio: tuple[Protection, grpc.aio.Channel], upstream: UpstreamProcess) -> None:
    protection, channel = aio
    method = "/iprobe.E/Unary"
    upstream.configure("iprobe.E", code="UNAVAILABLE")
    for _ in range(2):
        await unary(channel, method)
    upstream.configure("iprobe.E", delay_ms=1000)  # probes outlast the arrival of all 50
    await asyncio.sleep(0.35)
    before = upstream.calls(method)

    outcomes = await asyncio.gather(*(unary(channel, method) for _ in range(50)))

    reached = upstream.calls(method) - before
    assert 1 <= reached <= 2
    assert sum(o.code == grpc.StatusCode.OK for o in outcomes) == reached
    assert sum(o.breaker_rejected for o in outcomes) == 50 - reached
    upstream.configure("iprobe.E", delay_ms=10)
    breaker = protection.breakers.get("iprobe")
    assert breaker is not None
    for _ in range(10):
        if breaker.state is State.CLOSED:
            break
        await unary(channel, method)
    assert breaker.state is State.CLOSED
    assert breaker.view().last_transition.reason == "probes_healthy"  # type: ignore[union-attr]


async def test_aio_stream_failing_after_messages_counts_as_a_failure(
        aio: tuple[Protection, grpc.aio.Channel], upstream: UpstreamProcess) -> None:
    protection, channel = aio
    upstream.configure("istream.E", code="UNAVAILABLE", fail_after=2)
    for _ in range(2):
        outcome = await server_stream(channel, "/istream.E/ServerStream", b"m")
        assert outcome.messages == [b"m#0", b"m#1"]
        assert outcome.code == grpc.StatusCode.UNAVAILABLE
    await asyncio.sleep(0.05)
    assert protection.breakers.get("istream").state is State.OPEN  # type: ignore[union-attr]


async def test_aio_caller_errors_never_trip_and_status_fallback_answers_when_open(
        aio: tuple[Protection, grpc.aio.Channel], upstream: UpstreamProcess) -> None:
    protection, channel = aio
    upstream.configure("ifb.E", code="NOT_FOUND")
    for _ in range(4):
        assert (await unary(channel, "/ifb.E/Unary")).code == grpc.StatusCode.NOT_FOUND
    assert protection.breakers.get("ifallback").state is State.CLOSED  # type: ignore[union-attr]

    upstream.configure("ifb.E", code="INTERNAL")
    for _ in range(2):
        await unary(channel, "/ifb.E/Unary")
    outcome = await unary(channel, "/ifb.E/Unary")
    assert (outcome.code, outcome.details) == (grpc.StatusCode.FAILED_PRECONDITION, "degraded")
    assert outcome.trailing["x-sidecar-fallback"] == "status"


async def test_aio_concurrency_limit_refuses_the_excess(
        aio: tuple[Protection, grpc.aio.Channel], upstream: UpstreamProcess) -> None:
    _, channel = aio
    upstream.configure("ilim.E", delay_ms=1500)
    outcomes = await asyncio.gather(*(unary(channel, "/ilim.E/Unary") for _ in range(6)))
    refused = [o for o in outcomes if o.code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert sum(o.code == grpc.StatusCode.OK for o in outcomes) == 2
    assert len(refused) == 4
    assert all(o.trailing["x-sidecar-overflow"] == "true" for o in refused)
    assert upstream.method_stats("/ilim.E/Unary")["max_in_flight"] == 2


async def test_aio_timeout_ms_applies_when_the_caller_sets_no_deadline(
        aio: tuple[Protection, grpc.aio.Channel], upstream: UpstreamProcess) -> None:
    _, channel = aio
    await unary(channel, "/ideadline.E/Unary")
    remaining = upstream.method_stats("/ideadline.E/Unary")["last_time_remaining_s"]
    assert 1.0 < remaining <= 1.55


# --- sync grpc --------------------------------------------------------------------------------


@pytest.fixture
def sync(upstream: UpstreamProcess) -> Iterator[tuple[Protection, grpc.Channel]]:
    protection = _protection(
        upstream,
        strip={"routes": ["/strip."], "breaker": BREAKER},
        sfine={"routes": ["/sfine."]},
        sprobe={"routes": ["/sprobe."], "breaker": {
            **BREAKER, "open": {"base_ms": 300, "jitter": 0}, "half_open_probes": 1,
            "slow_call_ms": 10000}},
        sfallback={"routes": ["/sfb."], "breaker": BREAKER,
                   "fallback": {"status": "FAILED_PRECONDITION", "message": "degraded"}},
    )
    channel = grpc.intercept_channel(grpc.insecure_channel(upstream.address),
                                     *protection.sync_interceptors())
    with channel:
        yield protection, channel


def _sync_code(call: Any) -> tuple[grpc.StatusCode, dict[str, Any]]:
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), dict(error.trailing_metadata() or ())
    return grpc.StatusCode.OK, {}


def test_sync_interceptor_trips_and_rejects_every_shape_without_touching_upstream(
        sync: tuple[Protection, grpc.Channel], upstream: UpstreamProcess) -> None:
    protection, channel = sync
    upstream.configure("strip.E", code="UNAVAILABLE")
    unary_call = channel.unary_unary("/strip.E/Unary")
    for _ in range(2):
        assert _sync_code(lambda: unary_call(b"x", timeout=5))[0] == grpc.StatusCode.UNAVAILABLE
    assert protection.breakers.get("strip").state is State.OPEN  # type: ignore[union-attr]
    before = upstream.stats()

    results = [
        _sync_code(lambda: unary_call(b"x", timeout=5)),
        _sync_code(lambda: list(channel.unary_stream("/strip.E/ServerStream")(b"x", timeout=5))),
        _sync_code(lambda: channel.stream_unary("/strip.E/ClientStream")(iter([b"x"]),
                                                                         timeout=5)),
        _sync_code(lambda: list(channel.stream_stream("/strip.E/Bidi")(iter([b"x"]),
                                                                       timeout=5))),
    ]

    for code, trailing in results:
        assert code == grpc.StatusCode.UNAVAILABLE
        assert trailing["x-sidecar-breaker"] == "open"
        assert trailing["x-sidecar-upstream"] == "strip"
    assert upstream.stats() == before


def test_sync_interceptor_streams_pass_and_count(
        sync: tuple[Protection, grpc.Channel], upstream: UpstreamProcess) -> None:
    protection, channel = sync
    assert list(channel.unary_stream("/sfine.E/ServerStream")(b"s", timeout=5)) == [
        b"s#0", b"s#1", b"s#2"]
    assert list(channel.stream_stream("/sfine.E/Bidi")(iter([b"1", b"2"]), timeout=5)) == [
        b"1", b"2"]
    assert channel.stream_unary("/sfine.E/ClientStream")(iter([b"a"]), timeout=5) == b"a"
    assert channel.unary_unary("/sfine.E/Unary")(b"u", timeout=5) == b"u"
    breaker = protection.breakers.get("sfine")
    assert breaker is not None
    for _ in range(100):  # stream outcomes are settled from grpc's callback thread
        if breaker.view().snapshot.calls == 4:
            break
        threading.Event().wait(0.01)
    assert breaker.view().snapshot.calls == 4


def test_sync_half_open_admits_one_probe_of_many_threads(
        sync: tuple[Protection, grpc.Channel], upstream: UpstreamProcess) -> None:
    protection, channel = sync
    method = "/sprobe.E/Unary"
    call = channel.unary_unary(method)
    upstream.configure("sprobe.E", code="UNAVAILABLE")
    for _ in range(2):
        _sync_code(lambda: call(b"x", timeout=5))
    upstream.configure("sprobe.E", delay_ms=1500)  # the probe outlasts all 20 threads' calls
    threading.Event().wait(0.35)
    before = upstream.calls(method)
    codes: list[grpc.StatusCode] = []
    threads = [threading.Thread(target=lambda: codes.append(_sync_code(
        lambda: call(b"x", timeout=5))[0])) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert upstream.calls(method) - before == 1
    assert codes.count(grpc.StatusCode.OK) == 1
    assert codes.count(grpc.StatusCode.UNAVAILABLE) == 19
    assert protection.breakers.get("sprobe").state is State.CLOSED  # type: ignore[union-attr]


def test_sync_status_fallback_answers_when_open(
        sync: tuple[Protection, grpc.Channel], upstream: UpstreamProcess) -> None:
    _, channel = sync
    upstream.configure("sfb.E", code="INTERNAL")
    call = channel.unary_unary("/sfb.E/Unary")
    for _ in range(2):
        assert _sync_code(lambda: call(b"x", timeout=5))[0] == grpc.StatusCode.INTERNAL
    code, trailing = _sync_code(lambda: call(b"x", timeout=5))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert trailing["x-sidecar-fallback"] == "status"


def test_pinning_an_unknown_upstream_is_refused(upstream: UpstreamProcess) -> None:
    protection = _protection(upstream, a={"routes": ["/a."]})
    with pytest.raises(ValueError, match="upstream: no upstream named 'b'"):
        protection.aio_interceptors(upstream="b")
