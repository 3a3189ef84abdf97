"""The sidecar forwards every call shape faithfully: payloads, metadata, status, deadlines,
cancellation. Real upstream process, real sidecar started through its CLI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from google.protobuf.any_pb2 import Any
from google.rpc import code_pb2
from google.rpc.status_pb2 import Status

from tests.integration.proxy._calls import client_stream, server_stream, unary, wait_until
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

pytestmark = pytest.mark.integration

# sidecar.test.Echo is described by the upstream's reflection (native shapes); plain.Echo is
# not (forwarded as generic bidi streams). Both must behave the same to a caller.
SERVICES = ["sidecar.test.Echo", "plain.Echo"]


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory,
            upstream: UpstreamProcess) -> Iterator[SidecarProcess]:
    config = {
        "upstreams": {
            "echo": {
                "address": upstream.address,
                "routes": ["/sidecar.test.", "/plain.", "/meta.", "/deadline.", "/cancel."],
                "timeout_ms": 1500,
                "breaker": {"mode": "metrics_only"},
            },
            "narrow": {"address": upstream.address, "routes": ["/plain.Narrow/"]},
        },
    }
    with SidecarProcess(tmp_path_factory.mktemp("sidecar"), config) as process:
        # From here on sidecar.test.Echo goes through the native per-shape handlers.
        process.wait_for_log("learned the call shapes of 4 methods of upstream echo")
        yield process


@pytest.fixture
async def channel(sidecar: SidecarProcess) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(sidecar.address) as channel:
        yield channel


@pytest.mark.parametrize("service", SERVICES)
async def test_unary_call_is_forwarded_byte_for_byte(channel: grpc.aio.Channel,
                                                      service: str) -> None:
    payload = bytes(range(256)) * 10
    outcome = await unary(channel, f"/{service}/Unary", payload)
    assert outcome.code == grpc.StatusCode.OK
    assert outcome.messages == [payload]


@pytest.mark.parametrize("service", SERVICES)
async def test_server_stream_delivers_every_message(channel: grpc.aio.Channel,
                                                     service: str) -> None:
    outcome = await server_stream(channel, f"/{service}/ServerStream", b"m")
    assert outcome.code == grpc.StatusCode.OK
    assert outcome.messages == [b"m#0", b"m#1", b"m#2"]


@pytest.mark.parametrize("service", SERVICES)
async def test_client_stream_delivers_every_request(channel: grpc.aio.Channel,
                                                     service: str) -> None:
    outcome = await client_stream(channel, f"/{service}/ClientStream", [b"a", b"b", b"c"])
    assert outcome.code == grpc.StatusCode.OK
    assert outcome.messages == [b"a|b|c"]


@pytest.mark.parametrize("service", SERVICES)
async def test_bidi_stream_answers_each_message_while_the_caller_still_sends(
        channel: grpc.aio.Channel, service: str) -> None:
    call = channel.stream_stream(f"/{service}/Bidi")()
    for word in (b"one", b"two", b"three"):
        await call.write(word)
        # The answer arrives before the caller half-closes: a real interleaved stream.
        assert await asyncio.wait_for(call.read(), 5) == word
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK


async def test_longest_route_prefix_wins(channel: grpc.aio.Channel,
                                         sidecar: SidecarProcess) -> None:
    before = sidecar.breaker("echo").window.calls
    call = channel.stream_stream("/plain.Narrow/Bidi")(iter([b"x"]))
    assert [m async for m in call] == [b"x"]
    # "/plain.Narrow/" is a longer prefix than "/plain.": the call went to "narrow" only.
    assert sidecar.breaker("narrow").window.calls == 1
    assert sidecar.breaker("echo").window.calls == before


async def test_unrouted_method_gets_unimplemented_naming_the_method(
        channel: grpc.aio.Channel) -> None:
    outcome = await unary(channel, "/nowhere.v1.Svc/Method")
    assert outcome.code == grpc.StatusCode.UNIMPLEMENTED
    assert "/nowhere.v1.Svc/Method" in outcome.details


async def test_request_metadata_reaches_the_upstream(channel: grpc.aio.Channel,
                                                     upstream: UpstreamProcess) -> None:
    metadata = (("x-request-id", "r-42"), ("x-tenant", "acme"), ("x-blob-bin", b"\x00\xff"))
    outcome = await unary(channel, "/meta.In/Unary", metadata=metadata)
    assert outcome.code == grpc.StatusCode.OK
    seen = dict(map(tuple, upstream.method_stats("/meta.In/Unary")["last_metadata"]))
    assert seen["x-request-id"] == "r-42"
    assert seen["x-tenant"] == "acme"
    assert seen["x-blob-bin"] == "00ff"


async def test_error_status_details_and_both_metadata_come_back_verbatim(
        channel: grpc.aio.Channel, upstream: UpstreamProcess) -> None:
    upstream.configure("meta.Err", code="NOT_FOUND", details="order 7 not found",
                       initial_metadata={"x-served-by": "upstream-a"},
                       trailing_metadata={"x-debug": "shard=3"})
    outcome = await unary(channel, "/meta.Err/Unary")
    assert outcome.code == grpc.StatusCode.NOT_FOUND
    assert outcome.details == "order 7 not found"
    assert outcome.initial["x-served-by"] == "upstream-a"
    assert outcome.trailing["x-debug"] == "shard=3"
    assert not any(key.startswith("x-sidecar") for key in outcome.trailing)


async def test_failed_stream_status_details_and_trailers_come_back_verbatim(
        channel: grpc.aio.Channel, upstream: UpstreamProcess) -> None:
    # Headers sent just before a stream's error status are lost now and then by grpc itself
    # (a few % of direct calls, no proxy involved), so only status and trailers are checked.
    upstream.configure("meta.StreamErr", code="NOT_FOUND", details="order 7 not found",
                       trailing_metadata={"x-debug": "shard=3"})
    outcome = await server_stream(channel, "/meta.StreamErr/ServerStream")
    assert outcome.code == grpc.StatusCode.NOT_FOUND
    assert outcome.details == "order 7 not found"
    assert outcome.trailing["x-debug"] == "shard=3"
    assert not any(key.startswith("x-sidecar") for key in outcome.trailing)


async def test_rich_error_details_come_back_verbatim(channel: grpc.aio.Channel,
                                                     upstream: UpstreamProcess) -> None:
    # google.rpc.Status travels in the grpc-status-details-bin trailer (grpc_status's format).
    status = Status(code=code_pb2.FAILED_PRECONDITION, message="quota exceeded",
                    details=[Any(type_url="type.example/Quota", value=b"\x08\x05")])
    upstream.configure("meta.Rich", code="FAILED_PRECONDITION", details="quota exceeded",
                       trailing_metadata_hex={
                           "grpc-status-details-bin": status.SerializeToString().hex()})
    outcome = await unary(channel, "/meta.Rich/Unary")
    assert outcome.code == grpc.StatusCode.FAILED_PRECONDITION
    assert Status.FromString(outcome.trailing["grpc-status-details-bin"]) == status


async def test_success_trailers_come_back_verbatim(channel: grpc.aio.Channel,
                                                   upstream: UpstreamProcess) -> None:
    upstream.configure("meta.Ok", initial_metadata={"x-version": "7"},
                       trailing_metadata={"x-cost": "12"})
    for call in (unary(channel, "/meta.Ok/Unary"), server_stream(channel, "/meta.Ok/ServerStream"),
                 client_stream(channel, "/meta.Ok/ClientStream", [b"a"])):
        outcome = await call
        assert outcome.code == grpc.StatusCode.OK
        assert outcome.initial["x-version"] == "7"
        assert outcome.trailing["x-cost"] == "12"


async def test_stream_failing_midway_delivers_its_messages_then_the_status(
        channel: grpc.aio.Channel, upstream: UpstreamProcess) -> None:
    upstream.configure("meta.Mid", code="UNAVAILABLE", details="shard moved", fail_after=2)
    outcome = await server_stream(channel, "/meta.Mid/ServerStream", b"m")
    assert outcome.messages == [b"m#0", b"m#1"]
    assert outcome.code == grpc.StatusCode.UNAVAILABLE
    assert outcome.details == "shard moved"


async def test_upstream_sees_the_callers_remaining_deadline(channel: grpc.aio.Channel,
                                                            upstream: UpstreamProcess) -> None:
    await unary(channel, "/deadline.Caller/Unary", timeout=4.0)
    remaining = upstream.method_stats("/deadline.Caller/Unary")["last_time_remaining_s"]
    assert remaining is not None
    assert 3.0 < remaining <= 4.05  # passed on, minus the time spent getting there


async def test_timeout_ms_applies_when_the_caller_sets_no_deadline(
        channel: grpc.aio.Channel, upstream: UpstreamProcess) -> None:
    await unary(channel, "/deadline.None/Unary")
    remaining = upstream.method_stats("/deadline.None/Unary")["last_time_remaining_s"]
    assert remaining is not None
    assert 1.0 < remaining <= 1.55  # timeout_ms: 1500


async def test_caller_deadline_is_enforced_on_a_hanging_upstream(
        channel: grpc.aio.Channel, upstream: UpstreamProcess) -> None:
    upstream.configure("deadline.Hang", hang=True)
    started = asyncio.get_running_loop().time()
    outcome = await unary(channel, "/deadline.Hang/Unary", timeout=0.3)
    assert outcome.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert asyncio.get_running_loop().time() - started < 3.0


async def test_caller_cancelling_cancels_the_upstream_call(channel: grpc.aio.Channel,
                                                           upstream: UpstreamProcess) -> None:
    upstream.configure("cancel.Down", hang=True)
    for method in ("/cancel.Down/Unary", "/cancel.Down/Bidi"):
        if method.endswith("Unary"):
            call = channel.unary_unary(method)(b"x", timeout=30)
        else:
            call = channel.stream_stream(method)(iter([b"x"]), timeout=30)
        await wait_until(lambda m=method: upstream.method_stats(m).get("in_flight") == 1)
        call.cancel()
        # The upstream's own deadline is 30 s away: only the propagated cancel ends it now.
        await wait_until(lambda m=method: upstream.method_stats(m).get("cancelled") == 1,
                         timeout_s=5)
        assert upstream.method_stats(method)["in_flight"] == 0


async def test_upstream_cancelling_is_answered_cancelled(channel: grpc.aio.Channel,
                                                         upstream: UpstreamProcess) -> None:
    upstream.configure("cancel.Up", code="CANCELLED", details="upstream gave up")
    outcome = await unary(channel, "/cancel.Up/Unary")
    assert outcome.code == grpc.StatusCode.CANCELLED
    assert outcome.details == "upstream gave up"
