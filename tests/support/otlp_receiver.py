"""A real OTLP/gRPC trace receiver, built from the official ``opentelemetry-proto`` service
definitions (``opentelemetry.proto.collector.trace.v1.TraceService/Export``).

In-process (a grpc server on its own threads; usable from sync and asyncio tests)::

    with OtlpReceiver() as receiver:               # listens on 127.0.0.1:<free port>
        run_sidecar(otlp_endpoint=receiver.endpoint)
        spans = receiver.wait_for(lambda s: s.name == "breaker.transition")

As its own process (e.g. for benchmarks, so decoding spans costs the measured process
nothing)::

    python -m tests.support.otlp_receiver --port 4317 [--out spans.jsonl | --count-only]

prints ``listening on 127.0.0.1:PORT`` once serving and, on SIGTERM/SIGINT,
``{"spans": N, "exports": M}``; with ``--out`` every span is also written as a JSON line.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import IO, Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2

DEFAULT_WAIT_S = 15.0


def _any_value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def _attributes(kvs: Sequence[common_pb2.KeyValue]) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in kvs}


@dataclass(frozen=True)
class ReceivedLink:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedEvent:
    name: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as it arrived on the wire; ids are lower-case hex, like in ``traceparent``."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind: 1 internal, 2 server, 3 client
    attributes: dict[str, Any]
    events: list[ReceivedEvent]
    links: list[ReceivedLink]
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str
    flags: int
    start_time_unix_nano: int
    end_time_unix_nano: int
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""

    def event(self, name: str) -> ReceivedEvent | None:
        return next((e for e in self.events if e.name == name), None)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink: Callable[[list[ReceivedSpan]], None],
                 count: Callable[[int], None] | None = None) -> None:
        self._sink = sink
        self._count = count

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        if self._count is not None:  # count only: cheap, for benchmarks
            self._count(sum(len(scope.spans) for resource in request.resource_spans
                            for scope in resource.scope_spans))
            return trace_service_pb2.ExportTraceServiceResponse()
        received: list[ReceivedSpan] = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=span.kind,
                        attributes=_attributes(span.attributes),
                        events=[ReceivedEvent(e.name, _attributes(e.attributes))
                                for e in span.events],
                        links=[ReceivedLink(link.trace_id.hex(), link.span_id.hex(),
                                            _attributes(link.attributes)) for link in span.links],
                        status_code=span.status.code,
                        status_message=span.status.message,
                        flags=span.flags,
                        start_time_unix_nano=span.start_time_unix_nano,
                        end_time_unix_nano=span.end_time_unix_nano,
                        resource=resource,
                        scope=scope_spans.scope.name,
                    ))
        self._sink(received)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    """An OTLP/gRPC trace endpoint on 127.0.0.1 that keeps every span it receives."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1", max_workers: int = 4,
                 keep_spans: bool = True, decode: bool = True) -> None:
        """``decode=False``: only count spans (no per-span decoding; ``spans()`` stays empty),
        so a benchmark's receiver takes as little CPU from the measured processes as it can."""
        self._decode = decode
        self._host = host
        self._requested_port = port
        self._max_workers = max_workers
        self._keep = keep_spans
        self._spans: list[ReceivedSpan] = []
        self._cond = threading.Condition()
        self.exports = 0
        self.span_count = 0
        self._server: grpc.Server | None = None
        self.port = 0
        self.on_spans: Callable[[list[ReceivedSpan]], None] | None = None

    @property
    def endpoint(self) -> str:
        """What to put in ``tracing.otlp_endpoint``."""
        return f"http://{self._host}:{self.port}"

    def start(self) -> OtlpReceiver:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self._max_workers))
        service = _TraceService(self._add, None if self._decode else self._add_count)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            service, server)
        self.port = server.add_insecure_port(f"{self._host}:{self._requested_port}")
        if self.port == 0:
            raise OSError(f"cannot bind OTLP receiver on {self._host}:{self._requested_port}")
        server.start()
        self._server = server
        return self

    def stop(self, grace_s: float = 1.0) -> None:
        if self._server is not None:
            self._server.stop(grace_s).wait()
            self._server = None

    def _add(self, spans: list[ReceivedSpan]) -> None:
        with self._cond:
            self.exports += 1
            self.span_count += len(spans)
            if self._keep:
                self._spans.extend(spans)
            self._cond.notify_all()
        if self.on_spans is not None:
            self.on_spans(spans)

    def _add_count(self, count: int) -> None:
        with self._cond:
            self.exports += 1
            self.span_count += count
            self._cond.notify_all()

    def spans(self) -> list[ReceivedSpan]:
        with self._cond:
            return list(self._spans)

    def clear(self) -> None:
        with self._cond:
            self._spans.clear()

    def wait_for(self, predicate: Callable[[ReceivedSpan], bool], count: int = 1,
                 timeout_s: float = DEFAULT_WAIT_S) -> list[ReceivedSpan]:
        """Block until ``count`` received spans match ``predicate``; return all that match.
        Raises ``TimeoutError`` listing what did arrive, so a failing test says why."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                matching = [s for s in self._spans if predicate(s)]
                if len(matching) >= count:
                    return matching
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    names = sorted({s.name for s in self._spans})
                    raise TimeoutError(
                        f"{len(matching)}/{count} matching spans after {timeout_s}s; "
                        f"received {len(self._spans)} spans named {names}")
                self._cond.wait(remaining)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="OTLP/gRPC trace receiver for tests/benchmarks")
    parser.add_argument("--port", type=int, default=4317)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--out", help="append every span as a JSON line to this file")
    parser.add_argument("--count-only", action="store_true",
                        help="do not decode spans, only count them (benchmarks)")
    args = parser.parse_args(argv)
    if args.out and args.count_only:
        parser.error("--out needs decoded spans; drop --count-only")

    out: IO[str] | None = open(args.out, "a") if args.out else None
    receiver = OtlpReceiver(port=args.port, host=args.host, keep_spans=False,
                            decode=not args.count_only)
    lock = threading.Lock()
    if out is not None:
        def write(spans: list[ReceivedSpan]) -> None:
            with lock:
                for span in spans:
                    out.write(json.dumps(asdict(span)) + "\n")
                out.flush()
        receiver.on_spans = write
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    receiver.start()
    print(f"listening on {args.host}:{receiver.port}", flush=True)
    stop.wait()
    receiver.stop()
    if out is not None:
        out.close()
    print(json.dumps({"spans": receiver.span_count, "exports": receiver.exports}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
