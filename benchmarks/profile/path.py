"""The sidecar's own Python work per forwarded call, without grpc: a steady, in-process figure
for judging each change to the forwarding path.

The real proxy objects (``build_app`` with the real telemetry plugin: breaker, metrics, tracing
at 1% with a batch span processor, ``endpoints: [a, b, c]`` with ``p2c_ewma``; optionally a
``retry`` policy) forward unary calls through ``ProxyHandler._forward``, the function grpc's
unary handler awaits. Only grpc is faked: the caller's servicer context and the upstream
connection's multicallable (a call that answers at once, with empty metadata). What is left is
exactly what the sidecar adds over ``benchmarks/proxy.py``'s naive pass-through: routing
lookups, admission, balancing, telemetry, metadata and deadline handling.

Prints the process CPU µs per call (the least of ``--repeat`` runs of ``--calls`` calls), minus
the same loop awaiting the fake call directly (the naive handler's own work), the function calls
(Python and builtin, counted by cProfile) per forwarded call, a figure noise cannot move, and
optionally the cProfile table of one run.

Usage::

    .venv/bin/python benchmarks/profile/path.py                 # full, and full + retry
    .venv/bin/python benchmarks/profile/path.py --cprofile 30   # and the top 30 functions
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import inspect
import io
import pstats
import sys
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from sidecar.config import SidecarConfig
from sidecar.proxy.app import build_app
from sidecar.proxy.upstream import Connection
from sidecar.telemetry.plugin import Telemetry

METHOD = "/bench.Echo/Unary"
PAYLOAD = b"x" * 100
INCOMING = (("user-agent", "grpc-python-asyncio/1.0 grpc-c/40.0.0 (linux; chttp2)"),)
"""What a grpc.aio client without metadata of its own sends, as the server hands it over."""


class _Exporter(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _Context:
    """The parts of grpc.aio's servicer context the forwarding path touches."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return INCOMING

    def peer(self) -> str:
        return "ipv4:127.0.0.1:40000"

    def time_remaining(self) -> float:
        return 9.99

    async def send_initial_metadata(self, metadata: object) -> None:
        pass

    def set_trailing_metadata(self, metadata: object) -> None:
        pass

    async def abort(self, code: object, details: str = "", trailing: object = ()) -> None:
        raise RuntimeError(f"aborted: {code} {details}")


class _Call:
    """An upstream unary call that has already answered."""

    __slots__ = ("_response",)

    def __init__(self, response: bytes) -> None:
        self._response = response

    def __await__(self) -> Any:
        return self._response
        yield  # a generator: ``await call`` runs it

    async def initial_metadata(self) -> tuple[()]:
        return ()

    async def trailing_metadata(self) -> tuple[()]:
        return ()

    def cancel(self) -> bool:
        return False


def _fake_unary(request: bytes, timeout: float | None = None,
                metadata: object = None) -> _Call:
    return _Call(request)


def _config(retry: bool) -> SidecarConfig:
    upstream: dict[str, Any] = {
        "endpoints": ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], "balancer": "p2c_ewma",
        "routes": ["/bench."]}
    if retry:
        upstream["retry"] = {"max_attempts": 3, "retryable_codes": ["UNAVAILABLE"],
                             "methods": [METHOD]}
    return SidecarConfig.model_validate({
        "service": "bench", "instance": "bench", "listen": "127.0.0.1:9",
        "admin_listen": "127.0.0.1:9", "metrics_listen": "127.0.0.1:9",
        "logging": {"level": "WARNING"}, "upstreams": {"echo": upstream},
        "tracing": {"otlp_endpoint": "http://127.0.0.1:9", "sample_ratio": 0.01}})


async def _setup(retry: bool) -> tuple[Any, Telemetry]:
    """The forwarding coroutine of a proxy built for ``_config(retry)``, warmed up."""
    config = _config(retry)
    telemetry = Telemetry(config, span_exporter=_Exporter(), serve_metrics=False)
    app = build_app(config, plugins=[telemetry.plugin()])
    routing, _ = app._build_routing(config, {})
    handler = app._handler
    handler.set_routing(routing)
    upstream = routing.upstreams["echo"]
    lookup = routing.upstreams.get
    forward = handler._forward
    context = _Context()

    breaker = upstream.guard.breaker_for(METHOD).name
    extra = (breaker,) if "breaker" in inspect.signature(forward).parameters else ()

    async def sidecar(n: int) -> None:
        for _ in range(n):
            await forward(upstream, lookup, METHOD, "unary_unary", PAYLOAD, context, *extra)

    await sidecar(1000)  # warm caches (handler, labels, statics)
    return sidecar, telemetry


async def _naive(n: int) -> None:
    for _ in range(n):
        await _fake_unary(PAYLOAD)


async def _run(names: Sequence[str], calls: int, repeat: int, profile: int) -> dict[str, float]:
    """The least CPU µs/call over ``repeat`` runs of each setup, the setups interleaved."""
    Connection.multicallable = lambda self, kind, method: _fake_unary  # type: ignore[method-assign]
    setups = {name: await _setup(name != "full") for name in names}
    bodies = {"naive": _naive, **{name: body for name, (body, _) in setups.items()}}
    best: dict[str, float] = {}
    for _ in range(repeat):
        for name, body in bodies.items():
            started = time.process_time()
            await body(calls)
            per_call = (time.process_time() - started) / calls * 1e6
            best[name] = min(best.get(name, per_call), per_call)  # deterministic: noise adds
    for name, (body, telemetry) in setups.items():
        profiler = cProfile.Profile()
        profiler.enable()
        await body(calls)
        profiler.disable()
        stats = pstats.Stats(profiler)
        # function calls (Python and builtin) per forwarded call: deterministic, unlike time
        best[f"{name} calls"] = stats.total_calls / calls  # type: ignore[attr-defined]
        if profile:
            out = io.StringIO()
            stats.stream = out  # type: ignore[attr-defined]
            stats.sort_stats("tottime").print_stats(profile)
            print(f"--- {name}\n{out.getvalue()}")
        telemetry.close()
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--cprofile", type=int, default=0, metavar="N",
                        help="print the top N functions by own time")
    parser.add_argument("--only", choices=("full", "retry"))
    args = parser.parse_args()
    names = [args.only] if args.only else ["full", "retry"]
    best = asyncio.run(_run(names, args.calls, args.repeat, args.cprofile))
    for name in names:
        print(f"{name:6} {best[name]:6.2f} µs/call, fake call alone {best['naive']:5.2f}: "
              f"the sidecar adds {best[name] - best['naive']:6.2f} µs/call "
              f"({best[f'{name} calls']:.1f} function calls)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
