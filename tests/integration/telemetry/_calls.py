"""Synchronous raw-bytes calls through the sidecar, and W3C trace context helpers."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class HostTrace:
    """A trace context the host app would send: ``traceparent`` with a fresh trace id."""

    trace_id: str
    span_id: str
    sampled: bool

    @classmethod
    def new(cls, sampled: bool = True) -> HostTrace:
        return cls(secrets.token_hex(16), secrets.token_hex(8), sampled)

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


def call(channel: grpc.Channel, method: str,
         metadata: Sequence[tuple[str, str]] = ()) -> tuple[grpc.StatusCode, dict[str, str]]:
    """One unary call; the status and the trailing metadata the host got."""
    try:
        _, rpc = channel.unary_unary(method).with_call(b"ping", metadata=tuple(metadata),
                                                       timeout=10)
    except grpc.RpcError as error:
        return error.code(), dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]
    return rpc.code(), dict(rpc.trailing_metadata() or ())


def traceparent_seen_by(last_metadata: list[list[str]]) -> tuple[str, str, int]:
    """(trace id, parent span id, flags) of the one traceparent an upstream received."""
    values = [value for key, value in last_metadata if key == "traceparent"]
    assert len(values) == 1, f"upstream got {len(values)} traceparent headers: {last_metadata}"
    _, trace_id, span_id, flags = values[0].split("-")
    return trace_id, span_id, int(flags, 16)


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0,
               what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s}s")
        time.sleep(0.02)
