"""Undecodable request bytes get INVALID_ARGUMENT from any server that uses the decode guard,
and never reach the servicer; valid requests pass through unchanged, in every call shape."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue

from sidecar.eventlog.api.auth import BearerTokenInterceptor, bearer_metadata
from sidecar.rpc_guard import DecodeGuardInterceptor

GARBAGE = b"\xff\xff\xff\xff"  # a field tag with no end: never a valid message
SERVICE = "guard.test.Svc"


class _Servicer:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def unary(self, request: StringValue, context: grpc.aio.ServicerContext) -> StringValue:
        self.seen.append(request.value)
        return StringValue(value=request.value.upper())

    async def server_stream(self, request: StringValue, context: grpc.aio.ServicerContext
                            ) -> AsyncIterator[StringValue]:
        self.seen.append(request.value)
        for i in range(2):
            yield StringValue(value=f"{request.value}{i}")

    async def server_stream_by_write(self, request: StringValue,
                                     context: grpc.aio.ServicerContext) -> None:
        self.seen.append(request.value)
        await context.write(StringValue(value=request.value))

    async def client_stream(self, requests: AsyncIterator[StringValue],
                            context: grpc.aio.ServicerContext) -> StringValue:
        values = [r.value async for r in requests]
        self.seen.extend(values)
        return StringValue(value="|".join(values))

    async def bidi(self, requests: AsyncIterator[StringValue],
                   context: grpc.aio.ServicerContext) -> AsyncIterator[StringValue]:
        async for request in requests:
            self.seen.append(request.value)
            yield request


def _handlers(servicer: _Servicer, service: str) -> grpc.GenericRpcHandler:
    common: dict[str, Any] = {"request_deserializer": StringValue.FromString,
                              "response_serializer": StringValue.SerializeToString}
    return grpc.method_handlers_generic_handler(service, {
        "Unary": grpc.unary_unary_rpc_method_handler(servicer.unary, **common),
        "Append": grpc.unary_unary_rpc_method_handler(servicer.unary, **common),
        "ServerStream": grpc.unary_stream_rpc_method_handler(servicer.server_stream, **common),
        "ServerStreamByWrite": grpc.unary_stream_rpc_method_handler(
            servicer.server_stream_by_write, **common),
        "ClientStream": grpc.stream_unary_rpc_method_handler(servicer.client_stream, **common),
        "Bidi": grpc.stream_stream_rpc_method_handler(servicer.bidi, **common),
    })


class _Server:
    def __init__(self, interceptors: list[Any], service: str = SERVICE) -> None:
        self.servicer = _Servicer()
        self.server = grpc.aio.server(interceptors=interceptors)
        self.server.add_generic_rpc_handlers((_handlers(self.servicer, service),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    async def __aenter__(self) -> tuple[_Servicer, grpc.aio.Channel]:
        await self.server.start()
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        return self.servicer, self.channel

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()
        await self.server.stop(None)


def _valid(text: str) -> bytes:
    data: bytes = StringValue(value=text).SerializeToString()
    return data


async def test_garbage_to_a_unary_method_is_invalid_argument_naming_the_method() -> None:
    async with _Server([DecodeGuardInterceptor()]) as (servicer, channel):
        call = channel.unary_unary(f"/{SERVICE}/Unary")
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await call(GARBAGE, timeout=5)
        assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert f"/{SERVICE}/Unary: request is not a valid message" in str(failure.value.details())
        assert servicer.seen == []
        assert StringValue.FromString(await call(_valid("ok"), timeout=5)).value == "OK"


@pytest.mark.parametrize("method", ["ServerStream", "ServerStreamByWrite"])
async def test_garbage_to_a_server_streaming_method_is_refused_and_valid_calls_stream(
        method: str) -> None:
    async with _Server([DecodeGuardInterceptor()]) as (servicer, channel):
        call = channel.unary_stream(f"/{SERVICE}/{method}")
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            _ = [r async for r in call(GARBAGE, timeout=5)]
        assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert servicer.seen == []
        replies = [StringValue.FromString(r).value async for r in call(_valid("a"), timeout=5)]
        assert replies[0] == ("a0" if method == "ServerStream" else "a")


async def test_one_garbage_message_in_a_request_stream_ends_the_call_with_invalid_argument(
        ) -> None:
    async with _Server([DecodeGuardInterceptor()]) as (servicer, channel):
        def requests() -> Iterator[bytes]:
            yield _valid("first")
            yield GARBAGE
            yield _valid("never")

        client_stream = channel.stream_unary(f"/{SERVICE}/ClientStream")
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await client_stream(requests(), timeout=5)
        assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        bidi = channel.stream_stream(f"/{SERVICE}/Bidi")
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            _ = [r async for r in bidi(requests(), timeout=5)]
        assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "never" not in servicer.seen
        ok = await client_stream(iter([_valid("x"), _valid("y")]), timeout=5)
        assert StringValue.FromString(ok).value == "x|y"


async def test_without_the_guard_grpc_answers_unknown_which_is_why_it_exists() -> None:
    async with _Server([]) as (_servicer, channel):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await channel.unary_unary(f"/{SERVICE}/Unary")(GARBAGE, timeout=5)
        assert failure.value.code() is grpc.StatusCode.UNKNOWN


async def test_behind_an_auth_interceptor_a_caller_without_token_hears_unauthenticated() -> None:
    auth = BearerTokenInterceptor("s3cret", reads_require_token=False)
    async with _Server([auth, DecodeGuardInterceptor()], service="sidecar.v1.EventLog") as (
            servicer, channel):
        append = channel.unary_unary("/sidecar.v1.EventLog/Append")
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await append(GARBAGE, timeout=5)
        assert failure.value.code() is grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await append(GARBAGE, timeout=5, metadata=bearer_metadata("s3cret"))
        assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert servicer.seen == []
