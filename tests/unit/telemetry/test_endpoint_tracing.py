"""Ejection, return and endpoint-set spans (linked to the call that caused them, always
sampled), and the chosen endpoint on the call span, with the SDK's in-memory exporter."""

from __future__ import annotations

import grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from sidecar.telemetry.endpoint_tracing import MAX_LISTED_ENDPOINTS, EndpointTracer
from sidecar.telemetry.tracing import SidecarSampler, TracingObserver
from tests.unit.telemetry.builders import (
    A,
    B,
    C,
    FakeClock,
    balancer,
    call_info,
    change,
    ejection,
    fail,
    returned,
)

SAMPLED_PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Harness:
    def __init__(self, ratio: float = 1.0) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider(sampler=SidecarSampler(ratio))
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = provider.get_tracer("test")
        self.observer = TracingObserver(self.tracer)
        self.endpoints = EndpointTracer(self.tracer)

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]


def test_an_ejection_is_a_root_span_linked_to_the_call_that_caused_it() -> None:
    harness = Harness()
    with harness.observer.start_call(call_info()) as scope:
        harness.endpoints.on_ejected(ejection(at_wall=1_700_000_000.25))
        scope.finish(grpc.StatusCode.UNAVAILABLE, 0.001)

    (span,) = harness.spans("endpoint.ejected")
    (call,) = harness.spans("payments.v1.Payments/Charge")
    assert span.parent is None and span.kind is SpanKind.INTERNAL
    assert span.context is not None and call.context is not None
    assert span.context.trace_id != call.context.trace_id  # its own trace
    (link,) = span.links
    assert link.context.trace_id == call.context.trace_id
    assert link.context.span_id == call.context.span_id
    assert dict(link.attributes or {}) == {"sidecar.link": "caused_by"}
    assert dict(span.attributes or {}) == {
        "sidecar.upstream": "payments",
        "sidecar.endpoint": A,
        "endpoint.reason": "consecutive_failures",
        "endpoint.ejection_ms": 30000,
        "endpoint.ejections_in_a_row": 2,
        "endpoint.consecutive_failures": 5,
        "endpoint.failure_rate": 1.0,
        "endpoint.calls": 5,
    }
    assert span.start_time == span.end_time == 1_700_000_000_250_000_000
    (event,) = [e for e in call.events if e.name == "endpoint.ejected"]
    assert dict(event.attributes or {})["sidecar.endpoint"] == A


def test_an_ejection_span_is_sampled_even_when_the_call_is_not() -> None:
    harness = Harness(ratio=0.0)
    with harness.observer.start_call(call_info()) as scope:
        harness.endpoints.on_ejected(ejection(reason="failure_rate", failure_rate=0.6,
                                              calls=40))
        scope.finish(grpc.StatusCode.UNAVAILABLE, 0.001)

    (span,) = harness.spans()  # the call itself was not sampled
    assert span.name == "endpoint.ejected"
    assert span.links and span.links[0].context.is_valid  # the unsampled call still has ids
    attributes = dict(span.attributes or {})
    assert attributes["endpoint.reason"] == "failure_rate"
    assert attributes["endpoint.failure_rate"] == 0.6 and attributes["endpoint.calls"] == 40


def test_a_real_balancer_ejecting_inside_a_call_links_the_span_to_that_call() -> None:
    harness = Harness()
    clock = FakeClock()
    upstream = balancer([harness.endpoints], clock, base_ejection_ms=1000)
    fail(upstream, A, 4)
    with harness.observer.start_call(call_info()) as scope:
        fail(upstream, A, 1)  # the fifth failure in a row, inside this call
        scope.finish(grpc.StatusCode.UNAVAILABLE, 0.001)
    clock.advance(1.5)
    with harness.observer.start_call(call_info()) as scope:
        upstream.pick()  # notices the ejection time is up
        scope.finish(grpc.StatusCode.OK, 0.001)

    first, second = harness.spans("payments.v1.Payments/Charge")
    (ejected,) = harness.spans("endpoint.ejected")
    (back,) = harness.spans("endpoint.returned")
    assert first.context is not None and second.context is not None
    assert ejected.links[0].context.span_id == first.context.span_id
    assert back.links[0].context.span_id == second.context.span_id
    assert dict(back.attributes or {}) == {"sidecar.upstream": "payments",
                                           "sidecar.endpoint": A,
                                           "endpoint.ejected_for_ms": 1000}


def test_a_change_of_the_endpoint_set_outside_any_call_has_no_link() -> None:
    harness = Harness()
    harness.endpoints.on_endpoints_changed(change(added=(C,), removed=(B,), count=2,
                                                  source="dns"))
    (span,) = harness.spans("endpoints.changed")
    assert span.links == ()
    assert dict(span.attributes or {}) == {
        "sidecar.upstream": "payments",
        "endpoints.added": (C,),
        "endpoints.removed": (B,),
        "endpoints.count": 2,
        "endpoints.source": "dns",
    }


def test_the_first_set_of_a_balancer_is_traced_and_long_lists_are_capped() -> None:
    harness = Harness()
    many = tuple(f"10.1.{i // 250}.{i % 250}:50051" for i in range(MAX_LISTED_ENDPOINTS + 10))
    harness.endpoints.on_endpoints_changed(change(added=many, count=len(many)))
    balancer([harness.endpoints], FakeClock())

    big, first = harness.spans("endpoints.changed")
    assert len((big.attributes or {})["endpoints.added"]) == MAX_LISTED_ENDPOINTS  # type: ignore[arg-type]
    assert (big.attributes or {})["endpoints.count"] == len(many)
    assert (first.attributes or {})["endpoints.added"] == (A, B, C)


def test_a_return_outside_any_call_is_a_span_without_link() -> None:
    harness = Harness()
    harness.endpoints.on_returned(returned(ejected_for_s=12.3456))
    (span,) = harness.spans("endpoint.returned")
    assert span.links == ()
    assert (span.attributes or {})["endpoint.ejected_for_ms"] == 12346


def test_the_chosen_endpoint_becomes_the_call_spans_server_address_and_port() -> None:
    harness = Harness()
    for address in ("10.0.0.7:50051", "[::1]:50052"):
        with harness.observer.start_call(call_info()) as scope:
            scope.endpoint(address)
            scope.finish(grpc.StatusCode.OK, 0.001)

    v4, v6 = harness.spans()  # the route's statics said 127.0.0.1:50051
    assert (v4.attributes or {})["server.address"] == "10.0.0.7"
    assert (v4.attributes or {})["server.port"] == 50051
    assert (v6.attributes or {})["server.address"] == "::1"
    assert (v6.attributes or {})["server.port"] == 50052


def test_the_chosen_endpoint_is_not_written_on_an_unsampled_call() -> None:
    harness = Harness(ratio=0.0)
    with harness.observer.start_call(call_info()) as scope:
        scope.endpoint("10.0.0.7:50051")  # must not fail on a non-recording span
        scope.finish(grpc.StatusCode.OK, 0.001)
    assert harness.spans() == []
