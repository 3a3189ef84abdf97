"""The sidecar's fast OTLP encoder produces exactly the bytes of the exporter package's own."""

from __future__ import annotations

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from sidecar.telemetry._otlp import encode_spans_fast


def _spans() -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("sidecar", "0.1.0")
    remote = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, is_remote=True,
                         trace_flags=TraceFlags(1),
                         trace_state=TraceState([("vendor", "abc"), ("x", "1")]))
    parent = set_span_in_context(NonRecordingSpan(remote))
    scalars = {"rpc.system": "grpc", "server.port": 50051, "ratio": 0.5, "ok": True}

    with tracer.start_as_current_span("pay.Svc/Ok", context=parent, kind=SpanKind.CLIENT,
                                      attributes=scalars):
        pass
    with tracer.start_as_current_span("pay.Svc/Failed", kind=SpanKind.CLIENT,
                                      attributes=scalars) as failed:
        failed.set_status(Status(StatusCode.ERROR, "UNAVAILABLE"))
        with tracer.start_as_current_span("child", kind=SpanKind.INTERNAL) as child:
            child.set_status(Status(StatusCode.OK))
    with tracer.start_as_current_span("pay.Svc/Rejected", kind=SpanKind.CLIENT) as rejected:
        rejected.add_event("breaker.rejected", {"breaker.reason": "open"})
    span = tracer.start_span("breaker.transition", context=Context(),
                             links=[Link(remote, {"sidecar.link": "caused_by"})])
    span.end()
    with tracer.start_as_current_span("odd", attributes={"codes": [1, 2], "names": ("a",)}):
        pass
    for kind in (SpanKind.SERVER, SpanKind.PRODUCER, SpanKind.CONSUMER):
        with tracer.start_as_current_span(f"kind-{kind.name}", kind=kind):
            pass
    return list(exporter.get_finished_spans())


def test_the_fast_encoder_writes_the_same_bytes_as_the_exporters_own_encoder() -> None:
    spans = _spans()

    assert encode_spans_fast(spans).SerializeToString() == encode_spans(spans).SerializeToString()


def test_the_same_attribute_values_in_many_spans_encode_the_same() -> None:
    spans = _spans() * 3  # cached attribute messages are copied, never shared or mutated

    assert encode_spans_fast(spans).SerializeToString() == encode_spans(spans).SerializeToString()
