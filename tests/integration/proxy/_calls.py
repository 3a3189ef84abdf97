"""Small helpers for calling through the sidecar with raw bytes (no protobuf).

Initial metadata is read from the call, never from the AioRpcError: grpc may build the error
before the headers op has completed, so the error's copy can miss headers that did arrive.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc


@dataclass
class Outcome:
    """What a caller got: status, details, messages and metadata as plain dicts."""

    code: grpc.StatusCode
    details: str
    messages: list[bytes] = field(default_factory=list)
    initial: dict[str, str | bytes] = field(default_factory=dict)
    trailing: dict[str, str | bytes] = field(default_factory=dict)

    @property
    def breaker_rejected(self) -> bool:
        return self.trailing.get("x-sidecar-breaker") == "open"


async def unary(channel: grpc.aio.Channel, method: str, payload: bytes = b"ping",
                **kwargs: object) -> Outcome:
    call = channel.unary_unary(method)(payload, **kwargs)
    try:
        response = await call
    except grpc.aio.AioRpcError as error:
        return Outcome(error.code(), error.details() or "", [],
                       dict(await call.initial_metadata() or ()),
                       dict(error.trailing_metadata() or ()))
    return Outcome(grpc.StatusCode.OK, await call.details() or "", [response],
                   dict(await call.initial_metadata() or ()),
                   dict(await call.trailing_metadata() or ()))


async def server_stream(channel: grpc.aio.Channel, method: str, payload: bytes = b"s",
                        **kwargs: object) -> Outcome:
    call = channel.unary_stream(method)(payload, **kwargs)
    messages: list[bytes] = []
    try:
        async for message in call:
            messages.append(message)
    except grpc.aio.AioRpcError as error:
        return Outcome(error.code(), error.details() or "", messages,
                       dict(await call.initial_metadata() or ()),
                       dict(error.trailing_metadata() or ()))
    return Outcome(await call.code(), await call.details() or "", messages,
                   dict(await call.initial_metadata() or ()),
                   dict(await call.trailing_metadata() or ()))


async def client_stream(channel: grpc.aio.Channel, method: str, payloads: list[bytes],
                        **kwargs: object) -> Outcome:
    call = channel.stream_unary(method)(iter(payloads), **kwargs)
    try:
        response = await call
    except grpc.aio.AioRpcError as error:
        return Outcome(error.code(), error.details() or "", [],
                       dict(await call.initial_metadata() or ()),
                       dict(error.trailing_metadata() or ()))
    return Outcome(grpc.StatusCode.OK, "", [response], dict(await call.initial_metadata() or ()),
                   dict(await call.trailing_metadata() or ()))


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0,
                     interval_s: float = 0.02) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(interval_s)
