"""A cheaper OTLP span encoder for the sidecar's exporter.

Why: at 100% sampling, encoding spans into the OTLP request was the largest single cost of
tracing (about 27 µs a span with opentelemetry-exporter-otlp-proto-common, in the batch
processor's thread, holding the GIL the proxy's event loop needs). The sidecar's call spans are
all alike: the same handful of scalar attributes, mostly the same values. This encoder builds
the same protobuf messages, but caches one ``KeyValue`` per (key, value) and copies it in C,
and encodes the resource and scope once per batch; about 2.5x cheaper a span.

Anything unusual (events, links, non-scalar attributes, dropped counts) goes through the
exporter package's own public ``encode_spans`` for that span, so the output is always what the
SDK would send: a unit test compares the serialized bytes of both encoders.

Threading: used only from the batch span processor's worker thread (one export at a time).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, cast

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PBSpan
from opentelemetry.sdk.trace import ReadableSpan

__all__ = ["FastOTLPSpanExporter", "encode_spans_fast"]

_KV_CACHE_SIZE: Final = 4096
"""Cached (key, value) attribute messages; the cache resets when full (bounded memory)."""
_FLAG_HAS_IS_REMOTE: Final = 0x100  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_FLAG_IS_REMOTE: Final = 0x200  # SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK

_kv_cache: dict[tuple[str, type, object], KeyValue] = {}


def _key_value(key: str, value: object) -> KeyValue | None:
    """The cached attribute message, or None for a value this fast path does not handle."""
    cache_key = (key, value.__class__, value)
    cached = _kv_cache.get(cache_key)
    if cached is not None:
        return cached
    if isinstance(value, bool):
        any_value = AnyValue(bool_value=value)
    elif isinstance(value, int):
        any_value = AnyValue(int_value=value)
    elif isinstance(value, float):
        any_value = AnyValue(double_value=value)
    elif isinstance(value, str):
        any_value = AnyValue(string_value=value)
    else:
        return None
    if len(_kv_cache) >= _KV_CACHE_SIZE:
        _kv_cache.clear()
    cached = _kv_cache[cache_key] = KeyValue(key=key, value=any_value)
    return cached


def _slow(span: ReadableSpan) -> PBSpan:
    """One span through the exporter package's own encoder."""
    encoded: PBSpan = encode_spans([span]).resource_spans[0].scope_spans[0].spans[0]
    return encoded


def _encode_span(span: ReadableSpan) -> PBSpan:
    if (span.events or span.links or span.dropped_attributes or span.dropped_events
            or span.dropped_links):
        return _slow(span)
    attributes = span.attributes or {}
    key_values = []
    for key, value in attributes.items():
        key_value = _key_value(key, value)
        if key_value is None:
            return _slow(span)
        key_values.append(key_value)
    context = span.get_span_context()
    if context is None or span.start_time is None or span.end_time is None:
        return _slow(span)
    parent = span.parent
    encoded = PBSpan(
        trace_id=context.trace_id.to_bytes(16, "big"),
        span_id=context.span_id.to_bytes(8, "big"),
        name=span.name,
        kind=cast("PBSpan.SpanKind.ValueType", span.kind.value + 1),  # INTERNAL=0 -> 1 ...
        start_time_unix_nano=span.start_time,
        end_time_unix_nano=span.end_time,
        flags=_FLAG_HAS_IS_REMOTE | (_FLAG_IS_REMOTE if parent and parent.is_remote else 0),
    )
    if context.trace_state:
        encoded.trace_state = ",".join(f"{k}={v}" for k, v in context.trace_state.items())
    if parent:
        encoded.parent_span_id = parent.span_id.to_bytes(8, "big")
    encoded.attributes.extend(key_values)
    status = span.status
    encoded.status.SetInParent()
    if status.status_code.value:
        encoded.status.code = status.status_code.value  # type: ignore[assignment]
    if status.description:
        encoded.status.message = status.description
    return encoded


def encode_spans_fast(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    """The OTLP request for ``spans``, equal to ``encode_spans(spans)`` (see module docstring).

    Spans are grouped by resource and instrumentation scope object, in first-seen order.
    """
    groups: dict[tuple[int, int], list[ReadableSpan]] = {}
    for span in spans:
        groups.setdefault((id(span.resource), id(span.instrumentation_scope)), []).append(span)
    request = ExportTraceServiceRequest()
    for group in groups.values():
        header = encode_spans(group[:1]).resource_spans[0]  # resource and scope, as the SDK does
        resource_spans = request.resource_spans.add()
        resource_spans.resource.CopyFrom(header.resource)
        resource_spans.schema_url = header.schema_url
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.CopyFrom(header.scope_spans[0].scope)
        scope_spans.schema_url = header.scope_spans[0].schema_url
        scope_spans.spans.extend([_encode_span(span) for span in group])
    return request


class FastOTLPSpanExporter(OTLPSpanExporter):
    """``OTLPSpanExporter`` (same settings, environment variables, retries) with the cheaper
    encoder. If a future exporter version stops calling ``_translate_data``, it simply falls
    back to the stock encoder (a unit test notices)."""

    def _translate_data(self, data: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
        return encode_spans_fast(data)

    def __repr__(self) -> str:
        return f"FastOTLPSpanExporter({getattr(self, '_endpoint', '')!r})"
