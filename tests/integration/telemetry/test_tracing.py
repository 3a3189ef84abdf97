"""Traces of calls and breaker decisions, from ``sidecar proxy`` started through its CLI to a
real OTLP/gRPC receiver, with a real upstream process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.integration.telemetry._calls import HostTrace, call, traceparent_seen_by
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

pytestmark = pytest.mark.integration

SPAN_KIND_CLIENT = 3
SPAN_STATUS_ERROR = 2
SAMPLED = 0x01
# Export quickly so tests do not wait for the default 5 s batch delay.
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50"}
# Trips on the second failure in a row and then stays open for the whole test.
TRIP_FAST = {"window": {"type": "count", "size": 4}, "minimum_calls": 4,
             "consecutive_failures": 2, "open": {"base_ms": 60000, "jitter": 0}}


def _config(upstream: UpstreamProcess, receiver: OtlpReceiver, sample_ratio: float,
            upstreams: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "service": "checkout",
        "upstreams": {name: {"address": upstream.address, **cfg}
                      for name, cfg in upstreams.items()},
        "tracing": {"otlp_endpoint": receiver.endpoint, "sample_ratio": sample_ratio},
    }


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, upstream: UpstreamProcess,
            receiver: OtlpReceiver) -> Iterator[SidecarProcess]:
    config = _config(upstream, receiver, 1.0, {
        "traced": {"routes": ["/traced."]},
        "trip": {"routes": ["/trip."], "breaker": TRIP_FAST},
        "unsampled": {"routes": ["/unsampled."], "breaker": TRIP_FAST},
        "fb": {"routes": ["/fb."], "breaker": TRIP_FAST,
               "fallback": {"status": "FAILED_PRECONDITION", "message": "degraded"}},
    })
    with SidecarProcess(tmp_path_factory.mktemp("sidecar"), config, env=FAST_EXPORT) as process:
        yield process


@pytest.fixture
def channel(sidecar: SidecarProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(sidecar.address) as channel:
        yield channel


def _call_span(receiver: OtlpReceiver, trace_id: str, name: str) -> ReceivedSpan:
    (span,) = receiver.wait_for(lambda s: s.trace_id == trace_id and s.name == name)
    return span


def _transition(receiver: OtlpReceiver, upstream: str, to_state: str = "open") -> ReceivedSpan:
    (span,) = receiver.wait_for(
        lambda s: s.name == "breaker.transition"
        and s.attributes.get("sidecar.upstream") == upstream
        and s.attributes.get("breaker.to_state") == to_state)
    return span


def test_a_call_span_arrives_inside_the_hosts_trace_with_the_grpc_attributes(
        channel: grpc.Channel, receiver: OtlpReceiver, upstream: UpstreamProcess) -> None:
    host = HostTrace.new()
    code, _ = call(channel, "/traced.Echo/Unary", [
        ("traceparent", host.traceparent), ("tracestate", "app=1"), ("baggage", "tenant=acme")])
    assert code is grpc.StatusCode.OK

    span = _call_span(receiver, host.trace_id, "traced.Echo/Unary")
    assert span.parent_span_id == host.span_id
    assert span.kind == SPAN_KIND_CLIENT
    assert span.attributes["rpc.system"] == "grpc"
    assert span.attributes["rpc.service"] == "traced.Echo"
    assert span.attributes["rpc.method"] == "Unary"
    assert span.attributes["rpc.grpc.status_code"] == 0
    assert span.attributes["server.address"] == "127.0.0.1"
    assert span.attributes["server.port"] == upstream.port
    assert span.attributes["client.address"] == "127.0.0.1"
    assert span.attributes["sidecar.upstream"] == "traced"
    assert span.resource["service.name"] == "checkout-sidecar"
    assert span.resource["service.instance.id"] == "sidecar"
    assert span.resource["service.version"]


def test_the_upstream_receives_the_hosts_trace_id_with_the_sidecar_span_as_parent(
        channel: grpc.Channel, receiver: OtlpReceiver, upstream: UpstreamProcess) -> None:
    host = HostTrace.new()
    call(channel, "/traced.Echo/Unary", [
        ("traceparent", host.traceparent), ("tracestate", "app=1"), ("baggage", "tenant=acme")])

    seen = upstream.method_stats("/traced.Echo/Unary")["last_metadata"]
    trace_id, parent_id, flags = traceparent_seen_by(seen)
    span = _call_span(receiver, host.trace_id, "traced.Echo/Unary")
    assert trace_id == host.trace_id
    assert parent_id == span.span_id
    assert flags & SAMPLED
    assert ["tracestate", "app=1"] in seen
    assert ["baggage", "tenant=acme"] in seen


def test_a_failed_call_span_has_its_grpc_status_code_and_an_error_status(
        channel: grpc.Channel, receiver: OtlpReceiver, upstream: UpstreamProcess) -> None:
    upstream.configure("traced.Failing", code="INTERNAL", details="boom")
    host = HostTrace.new()
    code, _ = call(channel, "/traced.Failing/Unary", [("traceparent", host.traceparent)])
    assert code is grpc.StatusCode.INTERNAL

    span = _call_span(receiver, host.trace_id, "traced.Failing/Unary")
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INTERNAL.value[0]
    assert span.status_code == SPAN_STATUS_ERROR


def test_a_trip_is_its_own_span_linked_to_the_call_that_caused_it(
        channel: grpc.Channel, receiver: OtlpReceiver, upstream: UpstreamProcess) -> None:
    upstream.configure("trip.Echo", code="UNAVAILABLE")
    first, second = HostTrace.new(), HostTrace.new()
    call(channel, "/trip.Echo/Unary", [("traceparent", first.traceparent)])
    call(channel, "/trip.Echo/Unary", [("traceparent", second.traceparent)])

    trip = _transition(receiver, "trip")
    causing = _call_span(receiver, second.trace_id, "trip.Echo/Unary")
    (link,) = trip.links
    assert (link.trace_id, link.span_id) == (second.trace_id, causing.span_id)
    assert trip.parent_span_id == "" and trip.trace_id not in (first.trace_id, second.trace_id)
    assert trip.attributes["breaker.from_state"] == "closed"
    assert trip.attributes["breaker.reason"] == "consecutive_failures"
    assert trip.attributes["breaker.failure_rate"] == 1.0
    assert trip.attributes["breaker.slow_call_rate"] == 0.0
    assert trip.attributes["breaker.calls_in_window"] == 2
    assert trip.attributes["breaker.open_duration_s"] == 60.0
    assert trip.attributes["breaker.trip_streak"] == 1
    assert causing.event("breaker.transition") is not None


def test_a_rejected_call_span_carries_a_breaker_rejected_event(
        channel: grpc.Channel, receiver: OtlpReceiver, upstream: UpstreamProcess) -> None:
    upstream.configure("trip.Rejected", code="UNAVAILABLE")
    for _ in range(2):
        call(channel, "/trip.Rejected/Unary")  # same "trip" breaker: already open or opens now
    host = HostTrace.new()
    code, trailing = call(channel, "/trip.Rejected/Unary", [("traceparent", host.traceparent)])
    assert (code, trailing.get("x-sidecar-breaker")) == (grpc.StatusCode.UNAVAILABLE, "open")

    event = _call_span(receiver, host.trace_id, "trip.Rejected/Unary").event("breaker.rejected")
    assert event is not None and event.attributes["breaker.reason"] == "open"
    assert event.attributes["breaker.retry_after_ms"] > 0


def test_a_fallback_answer_carries_rejected_and_fallback_events(
        channel: grpc.Channel, receiver: OtlpReceiver, upstream: UpstreamProcess) -> None:
    upstream.configure("fb.Echo", code="UNAVAILABLE")
    for _ in range(2):
        call(channel, "/fb.Echo/Unary")
    host = HostTrace.new()
    code, _ = call(channel, "/fb.Echo/Unary", [("traceparent", host.traceparent)])
    assert code is grpc.StatusCode.FAILED_PRECONDITION

    span = _call_span(receiver, host.trace_id, "fb.Echo/Unary")
    fallback = span.event("breaker.fallback")
    assert span.event("breaker.rejected") is not None
    assert fallback is not None and fallback.attributes == {
        "fallback.kind": "status", "fallback.target": "FAILED_PRECONDITION"}


def test_a_trip_caused_by_a_call_with_an_unsampled_parent_is_recorded_and_linked(
        channel: grpc.Channel, receiver: OtlpReceiver, upstream: UpstreamProcess) -> None:
    upstream.configure("unsampled.Echo", code="UNAVAILABLE")
    hosts = [HostTrace.new(sampled=False), HostTrace.new(sampled=False)]
    seen = []
    for host in hosts:
        call(channel, "/unsampled.Echo/Unary", [("traceparent", host.traceparent)])
        seen.append(traceparent_seen_by(
            upstream.method_stats("/unsampled.Echo/Unary")["last_metadata"]))

    trip = _transition(receiver, "unsampled")
    (link,) = trip.links
    trace_id, span_id, flags = seen[1]
    assert trace_id == hosts[1].trace_id and not flags & SAMPLED
    assert (link.trace_id, link.span_id) == (trace_id, span_id)
    assert not [s for s in receiver.spans() if s.trace_id in {h.trace_id for h in hosts}]


def test_with_sample_ratio_zero_no_call_is_exported_but_the_trip_is_and_links_to_its_call(
        tmp_path: Path, upstream: UpstreamProcess, receiver: OtlpReceiver) -> None:
    upstream.configure("zero.Echo", code="UNAVAILABLE")
    config = _config(upstream, receiver, 0.0, {"zero": {"routes": ["/zero."],
                                                       "breaker": TRIP_FAST}})
    seen = []
    with SidecarProcess(tmp_path, config, name="ratio0", env=FAST_EXPORT) as ratio0, \
            grpc.insecure_channel(ratio0.address) as channel:
        for _ in range(2):
            call(channel, "/zero.Echo/Unary")  # no trace context from the host
            seen.append(traceparent_seen_by(
                upstream.method_stats("/zero.Echo/Unary")["last_metadata"]))
        trip = _transition(receiver, "zero")
    # the sidecar has stopped: every span it had was flushed on shutdown

    (link,) = trip.links
    trace_id, span_id, flags = seen[1]
    assert (link.trace_id, link.span_id) == (trace_id, span_id)
    assert not flags & SAMPLED
    assert not [s for s in receiver.spans() if s.name == "zero.Echo/Unary"]
    assert {s.trace_id for s in receiver.spans()}.isdisjoint({t for t, _, _ in seen})
