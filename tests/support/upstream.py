"""A real upstream gRPC server for integration tests, in its own process, with fault switches.

Run: ``python -m tests.support.upstream --port N [--host 127.0.0.X] [--no-reflection]``.

Serves any method ``/<service>/<Shape>`` where Shape is one of ``Unary``, ``ServerStream``,
``ClientStream``, ``Bidi`` (the handler has that call shape; messages are raw bytes):

- Unary: answers the request bytes.
- ServerStream: answers ``stream_count`` messages, ``request + b"#<i>"``.
- ClientStream: answers the request messages joined with ``b"|"``.
- Bidi: answers each request message as it arrives.

Only ``sidecar.test.Echo`` is described by server reflection (so a proxy can learn its shapes);
any other service name is served the same way but unknown to reflection. Tests use distinct
service names to keep their breakers and fault switches apart on one shared upstream.

Control, over real gRPC (JSON bytes in and out, unary, service ``sidecar.test.Control``):

- ``Configure``: ``{"scope": "*" | "<service>", "code": "UNAVAILABLE", "details": "...",
  "failure_ratio": 1.0, "delay_ms": 0, "hang": false, "fail_after": 0, "stream_count": 3,
  "initial_metadata": {...}, "trailing_metadata": {...}, "trailing_metadata_hex": {...}}``:
  faults for that scope (a service's own scope wins over ``*``). Keys left out take their
  defaults; ``{"scope": s}`` clears it. ``trailing_metadata_hex`` carries ``-bin`` values.
  ``failure_ratio`` spreads failures evenly (deterministic): 0.5 fails every second call.
  ``fail_after``: stream responses send that many messages before failing.
  ``delay_ratio`` (default 1.0): the fraction of calls ``delay_ms`` delays, spread the same way.
  ``pushback_ms`` (default none): a failing call's trailers carry ``grpc-retry-pushback-ms``
  with that value (a string, so tests can send malformed ones).
  ``capacity`` (default 0: unlimited): at most that many calls of the scope spend their
  ``delay_ms`` at once; the others wait their turn in the server (a saturated service: latency
  grows with load). Stats' ``max_in_flight`` counts the waiting ones too.
- ``Stats``: per method path: ``calls``, ``in_flight``, ``max_in_flight``, ``cancelled``,
  ``last_metadata`` (``[[key, value]]``, binary values hex), ``last_time_remaining_s``.
- ``Reset``: clears faults and stats.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import math
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, wrappers_pb2

CONTROL_SERVICE = "sidecar.test.Control"
REFLECTED_SERVICE = "sidecar.test.Echo"
SHAPES = ("Unary", "ServerStream", "ClientStream", "Bidi")
_DELAYED: contextvars.ContextVar[bool] = contextvars.ContextVar("delayed", default=True)
"""Whether ``delay_ratio`` picked the call being served (per call: each runs in its own task)."""


@dataclass
class Faults:
    code: str = "OK"
    details: str = ""
    failure_ratio: float = 1.0
    delay_ms: float = 0.0
    delay_ratio: float = 1.0
    pushback_ms: str | None = None
    capacity: int = 0
    slots: asyncio.Semaphore | None = field(default=None, init=False, repr=False)
    hang: bool = False
    fail_after: int = 0
    stream_count: int = 3
    initial_metadata: dict[str, str] = field(default_factory=dict)
    trailing_metadata: dict[str, str] = field(default_factory=dict)
    trailing_metadata_hex: dict[str, str] = field(default_factory=dict)  # "-bin" keys
    calls: int = 0  # calls seen under this scope, for the failure spread


@dataclass
class MethodStats:
    calls: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    cancelled: int = 0
    last_metadata: list[list[str]] = field(default_factory=list)
    last_time_remaining_s: float | None = None


class Upstream:
    def __init__(self) -> None:
        self.faults: dict[str, Faults] = {}
        self.stats: dict[str, MethodStats] = {}

    # --- control ------------------------------------------------------------------------------

    def configure(self, body: dict[str, Any]) -> dict[str, Any]:
        scope = str(body.pop("scope", "*"))
        if body:
            self.faults[scope] = Faults(**body)
        else:
            self.faults.pop(scope, None)
        return {"scopes": sorted(self.faults)}

    def report(self) -> dict[str, Any]:
        return {method: vars(stats) for method, stats in self.stats.items()}

    def reset(self) -> dict[str, Any]:
        self.faults.clear()
        self.stats.clear()
        return {}

    # --- serving ------------------------------------------------------------------------------

    def _begin(self, method: str, context: grpc.aio.ServicerContext
               ) -> tuple[MethodStats, Faults, bool]:
        stats = self.stats.setdefault(method, MethodStats())
        stats.calls += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        stats.last_metadata = [
            [key, value.hex() if isinstance(value, bytes) else value]
            for key, value in context.invocation_metadata() or ()
        ]
        stats.last_time_remaining_s = context.time_remaining()
        service = method[1:].rpartition("/")[0]
        faults = self.faults.get(service) or self.faults.get("*") or Faults()
        faults.calls += 1
        n = faults.calls
        ratio = faults.failure_ratio
        fail = faults.code != "OK" and math.floor(n * ratio) > math.floor((n - 1) * ratio)
        spread = faults.delay_ratio
        _DELAYED.set(math.floor(n * spread) > math.floor((n - 1) * spread))
        return stats, faults, fail

    async def _prelude(self, faults: Faults, context: grpc.aio.ServicerContext) -> None:
        if faults.capacity:
            if faults.slots is None:
                faults.slots = asyncio.Semaphore(faults.capacity)
            async with faults.slots:
                await asyncio.sleep(faults.delay_ms / 1000.0)
        elif faults.delay_ms and _DELAYED.get():
            await asyncio.sleep(faults.delay_ms / 1000.0)
        if faults.hang:
            await asyncio.Event().wait()
        if faults.initial_metadata:
            await context.send_initial_metadata(tuple(faults.initial_metadata.items()))

    async def _end(self, faults: Faults, fail: bool, context: grpc.aio.ServicerContext) -> None:
        trailing = (*faults.trailing_metadata.items(),
                    *((k, bytes.fromhex(v)) for k, v in faults.trailing_metadata_hex.items()))
        if fail:
            if faults.pushback_ms is not None:
                trailing = (*trailing, ("grpc-retry-pushback-ms", faults.pushback_ms))
            await context.abort(grpc.StatusCode[faults.code], faults.details, trailing)
        if trailing:
            context.set_trailing_metadata(trailing)

    def handler(self, method: str) -> grpc.RpcMethodHandler | None:
        service, _, shape = method[1:].rpartition("/")
        if service == CONTROL_SERVICE:
            action = {"Configure": self.configure, "Stats": lambda _: self.report(),
                      "Reset": lambda _: self.reset()}.get(shape)
            if action is None:
                return None

            async def control(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                body = json.loads(request or b"{}")
                return json.dumps(action(body)).encode()

            return grpc.unary_unary_rpc_method_handler(control)

        upstream = self

        if shape == "Unary":
            async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes | None:
                stats, faults, fail = upstream._begin(method, context)
                try:
                    await upstream._prelude(faults, context)
                    await upstream._end(faults, fail, context)
                    return request
                except asyncio.CancelledError:
                    stats.cancelled += 1
                    raise
                finally:
                    stats.in_flight -= 1
            return grpc.unary_unary_rpc_method_handler(unary)

        if shape == "ServerStream":
            async def server_stream(request: bytes, context: grpc.aio.ServicerContext) -> None:
                stats, faults, fail = upstream._begin(method, context)
                try:
                    await upstream._prelude(faults, context)
                    count = faults.fail_after if fail else faults.stream_count
                    for i in range(count):
                        await context.write(request + b"#%d" % i)
                    await upstream._end(faults, fail, context)
                except asyncio.CancelledError:
                    stats.cancelled += 1
                    raise
                finally:
                    stats.in_flight -= 1
            return grpc.unary_stream_rpc_method_handler(server_stream)

        if shape == "ClientStream":
            async def client_stream(requests: Any, context: grpc.aio.ServicerContext
                                    ) -> bytes | None:
                stats, faults, fail = upstream._begin(method, context)
                try:
                    received = [message async for message in requests]
                    await upstream._prelude(faults, context)
                    await upstream._end(faults, fail, context)
                    return b"|".join(received)
                except asyncio.CancelledError:
                    stats.cancelled += 1
                    raise
                finally:
                    stats.in_flight -= 1
            return grpc.stream_unary_rpc_method_handler(client_stream)

        if shape == "Bidi":
            async def bidi(requests: Any, context: grpc.aio.ServicerContext) -> None:
                stats, faults, fail = upstream._begin(method, context)
                try:
                    await upstream._prelude(faults, context)
                    sent = 0
                    async for message in requests:
                        if fail and sent >= faults.fail_after:
                            break
                        await context.write(message)
                        sent += 1
                    await upstream._end(faults, fail, context)
                except asyncio.CancelledError:
                    stats.cancelled += 1
                    raise
                finally:
                    stats.in_flight -= 1
            return grpc.stream_stream_rpc_method_handler(bidi)
        return None


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    def service(self, handler_call_details: grpc.HandlerCallDetails
                ) -> grpc.RpcMethodHandler | None:
        return self._upstream.handler(handler_call_details.method)


def _register_echo_descriptor() -> None:
    """Describe sidecar.test.Echo in the default descriptor pool, for server reflection."""
    file = descriptor_pb2.FileDescriptorProto(
        name="sidecar/test/echo.proto", package="sidecar.test", syntax="proto3",
        dependency=[wrappers_pb2.DESCRIPTOR.name],
    )
    service = file.service.add(name="Echo")
    for name, client_streaming, server_streaming in (
        ("Unary", False, False), ("ServerStream", False, True),
        ("ClientStream", True, False), ("Bidi", True, True),
    ):
        service.method.add(
            name=name, input_type=".google.protobuf.BytesValue",
            output_type=".google.protobuf.BytesValue",
            client_streaming=client_streaming, server_streaming=server_streaming,
        )
    descriptor_pool.Default().AddSerializedFile(file.SerializeToString())


async def serve(port: int, reflection_on: bool, host: str = "127.0.0.1") -> None:
    server = grpc.aio.server(options=(("grpc.so_reuseport", 0),))
    server.add_generic_rpc_handlers((_Handler(Upstream()),))
    if reflection_on:
        from grpc_reflection.v1alpha import reflection

        _register_echo_descriptor()
        reflection.enable_server_reflection((REFLECTED_SERVICE, reflection.SERVICE_NAME), server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"upstream listening on {host}:{port}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description="test upstream with fault switches")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1",
                        help="loopback address to listen on (e.g. 127.0.0.2)")
    parser.add_argument("--no-reflection", action="store_true")
    args = parser.parse_args()
    asyncio.run(serve(args.port, not args.no_reflection, args.host))


if __name__ == "__main__":
    main()


# --- test-side helpers: start the upstream process and drive its control service -------------


class UpstreamProcess:
    """The upstream server in its own process, plus a client for its control service.

    Example::

        with UpstreamProcess(tmp_path) as upstream:
            upstream.configure("trip.Echo", code="UNAVAILABLE")
            ...
            assert upstream.calls("/trip.Echo/Unary") == 5
    """

    def __init__(self, log_dir: Any, *, reflection_on: bool = True, host: str = "127.0.0.1",
                 port: int | None = None) -> None:
        """``host``: the loopback address to listen on (127.0.0.X: several upstreams on one
        port, e.g. the A records of one DNS name); ``port``: None picks a free one."""
        from pathlib import Path

        from tests.support.procs import PYTHON, ManagedProcess, free_port, wait_for_port

        root = Path(__file__).resolve().parents[2]
        self.host = host
        self.port = free_port() if port is None else port
        self.address = f"{host}:{self.port}"
        args = [PYTHON, "-m", "tests.support.upstream", "--port", str(self.port),
                "--host", host]
        if not reflection_on:
            args.append("--no-reflection")
        log_name = (f"upstream-{self.port}.log" if host == "127.0.0.1"
                    else f"upstream-{host}-{self.port}.log")
        self.process = ManagedProcess(args, Path(log_dir) / log_name, cwd=root)
        try:
            wait_for_port(self.port, proc=self.process.proc, host=host)
        except Exception:
            self.process.close()
            raise
        self._channel = grpc.insecure_channel(self.address)

    def _control(self, action: str, body: dict[str, Any]) -> Any:
        call = self._channel.unary_unary(f"/{CONTROL_SERVICE}/{action}")
        return json.loads(call(json.dumps(body).encode(), timeout=10))

    def configure(self, scope: str = "*", **faults: Any) -> None:
        """Set the faults of ``scope`` (a service name, or ``*``); no faults clears it."""
        self._control("Configure", {"scope": scope, **faults})

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._control("Stats", {})
        return result

    def method_stats(self, method: str) -> dict[str, Any]:
        found: dict[str, Any] = self.stats().get(method, {})
        return found

    def calls(self, method: str) -> int:
        return int(self.method_stats(method).get("calls", 0))

    def reset(self) -> None:
        self._control("Reset", {})

    def close(self) -> None:
        self._channel.close()
        self.process.close()

    def __enter__(self) -> UpstreamProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
