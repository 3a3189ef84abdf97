"""Call spans, trace-context propagation, sampling and breaker transition spans, with the SDK's
in-memory exporter (the real OTLP path is covered by tests/integration/telemetry)."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from sidecar.breaker import Mode, ModeChange, State
from sidecar.config import parse_config
from sidecar.telemetry.call_spans import CallIds
from sidecar.telemetry.tracing import (
    SidecarSampler,
    TracingObserver,
    TransitionTracer,
    setup_tracing,
)
from tests.unit.telemetry.builders import call_info, transition

HOST_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
HOST_SPAN = "00f067aa0ba902b7"
SAMPLED_PARENT = f"00-{HOST_TRACE}-{HOST_SPAN}-01"
UNSAMPLED_PARENT = f"00-{HOST_TRACE}-{HOST_SPAN}-00"

SAMPLED_FLAG = 0x01

Metadata = list[tuple[str, str | bytes]]


class Harness:
    """A tracer provider set up as ``setup_tracing`` does (the sidecar's sampler and id
    generator, so root call spans take the fast path) with an in-memory exporter."""

    def __init__(self, ratio: float = 1.0, propagator: TextMapPropagator | None = None) -> None:
        self.exporter = InMemorySpanExporter()
        self.sampler = SidecarSampler(ratio)
        provider = TracerProvider(sampler=self.sampler, id_generator=CallIds())
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = provider.get_tracer("test")
        self.observer = TracingObserver(self.tracer, propagator)
        assert self.observer._roots is not None
        self.transitions = TransitionTracer(self.tracer)

    def call(self, metadata: Metadata | None = None, code: grpc.StatusCode = grpc.StatusCode.OK,
             trip: bool = False) -> Metadata:
        """Run one call through the observer; return the metadata sent upstream."""
        outgoing: Metadata = [("x-app", "1"), *(metadata or [])]
        with self.observer.start_call(call_info(metadata=tuple(metadata or ()))) as scope:
            scope.outgoing_metadata(outgoing)
            if trip:  # the breaker calls its listeners synchronously inside the call
                self.transitions.on_transition(transition())
            scope.finish(code, 0.001)
        return outgoing

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]


def _traceparent(metadata: Metadata) -> str:
    values = [v for k, v in metadata if k == "traceparent"]
    assert len(values) == 1, f"expected one traceparent, got {values}"
    assert isinstance(values[0], str)
    return values[0]


def test_a_call_span_follows_the_grpc_semantic_conventions() -> None:
    harness = Harness()
    harness.call(code=grpc.StatusCode.OK)

    (span,) = harness.spans()
    assert span.name == "payments.v1.Payments/Charge"
    assert span.kind is SpanKind.CLIENT
    assert dict(span.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "payments.v1.Payments",
        "rpc.method": "Charge",
        "rpc.grpc.status_code": 0,
        "server.address": "127.0.0.1",
        "server.port": 50051,
        "client.address": "127.0.0.1",
        "client.port": 40000,
        "sidecar.upstream": "payments",
    }
    assert span.status.status_code is StatusCode.UNSET


def test_a_failed_call_has_an_error_status_and_its_grpc_code() -> None:
    harness = Harness()
    harness.call(code=grpc.StatusCode.UNAVAILABLE)

    (span,) = harness.spans()
    assert span.attributes is not None and span.attributes["rpc.grpc.status_code"] == 14
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "UNAVAILABLE"


def test_the_hosts_traceparent_is_the_parent_and_the_upstream_gets_the_call_spans_context() -> None:
    harness = Harness()
    outgoing = harness.call([("traceparent", SAMPLED_PARENT)])

    (span,) = harness.spans()
    assert format(span.context.trace_id, "032x") == HOST_TRACE
    assert span.parent is not None and format(span.parent.span_id, "016x") == HOST_SPAN
    assert _traceparent(outgoing) == (
        f"00-{HOST_TRACE}-{format(span.context.span_id, '016x')}-01")
    assert ("x-app", "1") in outgoing


def test_tracestate_and_baggage_travel_on_to_the_upstream() -> None:
    harness = Harness()
    outgoing = harness.call([("traceparent", SAMPLED_PARENT), ("tracestate", "vendor=abc"),
                             ("baggage", "tenant=acme")])

    assert ("tracestate", "vendor=abc") in outgoing
    assert ("baggage", "tenant=acme") in outgoing
    assert sum(1 for k, _ in outgoing if k in ("tracestate", "baggage")) == 2


def test_an_unsampled_host_trace_is_not_recorded_but_its_trace_id_reaches_the_upstream() -> None:
    harness = Harness(ratio=1.0)
    outgoing = harness.call([("traceparent", UNSAMPLED_PARENT)])

    assert harness.spans() == []
    _, trace_id, span_id, flags = _traceparent(outgoing).split("-")
    assert trace_id == HOST_TRACE
    assert not int(flags, 16) & SAMPLED_FLAG
    assert span_id != HOST_SPAN  # the sidecar's own (unrecorded) span is the upstream's parent


def test_a_call_without_trace_context_starts_a_trace_sampled_by_the_ratio() -> None:
    always, never = Harness(ratio=1.0), Harness(ratio=0.0)
    always.call()
    outgoing = never.call()

    assert len(always.spans()) == 1
    assert never.spans() == []
    assert not int(_traceparent(outgoing).split("-")[3], 16) & SAMPLED_FLAG


def test_a_reload_changes_the_sample_ratio_for_the_next_calls() -> None:
    harness = Harness(ratio=0.0)
    harness.call()
    harness.sampler.set_ratio(1.0)
    harness.call()

    assert len(harness.spans()) == 1


def test_a_rejected_call_carries_a_breaker_rejected_event_and_a_fallback_event() -> None:
    harness = Harness()
    with harness.observer.start_call(call_info()) as scope:
        scope.rejected("open", 750)
        scope.fallback("upstream", "payments-backup")
        scope.finish(grpc.StatusCode.OK, 0.001)

    (span,) = harness.spans()
    events = {e.name: dict(e.attributes or {}) for e in span.events}
    assert events["breaker.rejected"] == {"breaker.reason": "open",
                                          "breaker.retry_after_ms": 750}
    assert events["breaker.fallback"] == {"fallback.kind": "upstream",
                                          "fallback.target": "payments-backup"}


def test_an_exception_inside_the_call_is_recorded_and_the_span_still_ends() -> None:
    harness = Harness()
    with pytest.raises(RuntimeError), harness.observer.start_call(call_info()):
        raise RuntimeError("proxy bug")

    (span,) = harness.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


def test_a_transition_is_its_own_root_span_with_the_breaker_numbers() -> None:
    harness = Harness()
    harness.transitions.on_transition(transition(at_wall=1_700_000_000.25))

    (span,) = harness.spans("breaker.transition")
    assert span.parent is None
    assert span.start_time == span.end_time == 1_700_000_000_250_000_000
    attributes = dict(span.attributes or {})
    assert attributes["sidecar.upstream"] == "payments"
    assert attributes["breaker.from_state"] == "closed"
    assert attributes["breaker.to_state"] == "open"
    assert attributes["breaker.reason"] == "failure_rate"
    assert attributes["breaker.failure_rate"] == 0.6
    assert attributes["breaker.slow_call_rate"] == 0.1
    assert attributes["breaker.calls_in_window"] == 10
    assert attributes["breaker.open_duration_s"] == 1.5
    assert attributes["breaker.trip_streak"] == 1
    assert span.links == ()  # no call was current


def test_a_transition_span_links_to_the_sampled_call_that_caused_it() -> None:
    harness = Harness(ratio=1.0)
    harness.call([("traceparent", SAMPLED_PARENT)], trip=True)

    (call,) = harness.spans("payments.v1.Payments/Charge")
    (trip,) = harness.spans("breaker.transition")
    (link,) = trip.links
    assert link.context.trace_id == call.context.trace_id
    assert link.context.span_id == call.context.span_id
    assert trip.context.trace_id != call.context.trace_id  # a trace of its own
    assert [e.name for e in call.events] == ["breaker.transition"]


@pytest.mark.parametrize("ratio, metadata", [
    (0.0, []),
    (1.0, [("traceparent", UNSAMPLED_PARENT)]),
], ids=["ratio_zero", "unsampled_parent"])
def test_a_transition_span_is_recorded_and_linked_even_when_the_call_is_not_sampled(
        ratio: float, metadata: Metadata) -> None:
    harness = Harness(ratio=ratio)
    outgoing = harness.call(metadata, trip=True)

    assert harness.spans("payments.v1.Payments/Charge") == []
    (trip,) = harness.spans("breaker.transition")
    (link,) = trip.links
    _, trace_id, span_id, _ = _traceparent(outgoing).split("-")
    assert format(link.context.trace_id, "032x") == trace_id  # what the upstream saw
    assert format(link.context.span_id, "016x") == span_id
    if metadata:
        assert trace_id == HOST_TRACE


def test_a_mode_change_is_an_always_sampled_span() -> None:
    harness = Harness(ratio=0.0)
    harness.transitions.on_mode_change(ModeChange(
        breaker="payments", from_mode=Mode.ENFORCE, to_mode=Mode.FORCED_OPEN, source="admin",
        at_wall=1_700_000_000.0))

    (span,) = harness.spans("breaker.mode_change")
    assert dict(span.attributes or {})["breaker.to_mode"] == "forced_open"


def test_transitions_from_every_state_are_recorded() -> None:
    harness = Harness(ratio=0.0)
    for from_state, to_state in [(State.CLOSED, State.OPEN), (State.OPEN, State.HALF_OPEN),
                                 (State.HALF_OPEN, State.CLOSED)]:
        harness.transitions.on_transition(transition(from_state=from_state, to_state=to_state))

    assert len(harness.spans("breaker.transition")) == 3


CONFIG = """
service: checkout
instance: checkout-1
upstreams:
  payments: {address: "127.0.0.1:50051", routes: ["/payments.v1.Payments/"]}
"""


def test_the_resource_names_the_sidecar_its_instance_and_version() -> None:
    setup = setup_tracing(parse_config(CONFIG), environ={})
    try:
        attributes = dict(setup.provider.resource.attributes)
    finally:
        setup.shutdown()

    assert attributes["service.name"] == "checkout-sidecar"
    assert attributes["service.instance.id"] == "checkout-1"
    assert attributes["service.version"]
    assert not setup.exporting


def test_an_endpoint_in_the_config_or_the_standard_environment_turns_export_on() -> None:
    with_file = setup_tracing(parse_config(CONFIG + "tracing: {otlp_endpoint: 'http://127.0.0.1:1'}"),
                              environ={})
    with_env = setup_tracing(parse_config(CONFIG),
                             environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"})
    turned_off = setup_tracing(
        parse_config(CONFIG + "tracing: {otlp_endpoint: 'http://127.0.0.1:1'}"),
        environ={"OTEL_TRACES_EXPORTER": "none"})
    for setup in (with_file, with_env, turned_off):
        setup.shutdown(timeout_s=0.1)

    assert with_file.exporting and with_file.endpoint == "http://127.0.0.1:1"
    assert with_env.exporting
    assert not turned_off.exporting


def test_the_file_sample_ratio_wins_and_otel_traces_sampler_arg_fills_in_when_absent() -> None:
    env = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}
    from_env = setup_tracing(parse_config(CONFIG), environ=env)
    from_file = setup_tracing(parse_config(CONFIG + "tracing: {sample_ratio: 0.5}"), environ=env)

    assert from_env.sampler.ratio == 0.25
    assert from_file.sampler.ratio == 0.5


def test_a_bad_otel_traces_sampler_arg_is_refused_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="OTEL_TRACES_SAMPLER_ARG"):
        setup_tracing(parse_config(CONFIG), environ={
            "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "lots"})


def test_a_sample_ratio_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="sample_ratio"):
        SidecarSampler(1.5)


def test_a_real_breaker_tripping_inside_a_call_links_its_transition_to_that_call() -> None:
    from sidecar.breaker import BreakerSettings, CircuitBreaker

    harness = Harness(ratio=0.0)
    breaker = CircuitBreaker("payments", BreakerSettings(consecutive_failures=2, minimum_calls=5),
                             clock=lambda: 10.0, wall_clock=lambda: 1_700_000_000.0)
    breaker.add_listener(harness.transitions)
    sent: list[Metadata] = []
    for _ in range(2):
        outgoing: Metadata = []
        with harness.observer.start_call(call_info()) as scope:
            permit = breaker.try_acquire()
            assert permit is not None
            scope.outgoing_metadata(outgoing)
            breaker.record(permit, 0.001, failed=True)
            scope.finish(grpc.StatusCode.UNAVAILABLE, 0.001)
        sent.append(outgoing)

    assert breaker.state is State.OPEN
    (trip,) = harness.spans("breaker.transition")
    (link,) = trip.links
    _, trace_id, span_id, _ = _traceparent(sent[1]).split("-")  # the second call tripped it
    assert (format(link.context.trace_id, "032x"), format(link.context.span_id, "016x")) == (
        trace_id, span_id)
    assert dict(trip.attributes or {})["breaker.reason"] == "consecutive_failures"


def test_the_proxy_answering_with_an_error_after_finish_is_not_recorded_as_an_exception() -> None:
    harness = Harness()
    with pytest.raises(RuntimeError), harness.observer.start_call(call_info()) as scope:
        scope.finish(grpc.StatusCode.UNAVAILABLE, 0.001)
        raise RuntimeError("abort")  # grpc.aio's context.abort() raises to end the handler

    (span,) = harness.spans()
    assert span.events == ()
    assert span.status.description == "UNAVAILABLE"


def test_the_direct_w3c_headers_match_what_the_sdk_propagators_write() -> None:
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    sdk = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    incoming: Metadata = [("traceparent", SAMPLED_PARENT), ("tracestate", "vendor=abc,x=1"),
                          ("baggage", "tenant=acme,region=eu")]
    direct = Harness().call(incoming)
    through_sdk = Harness(propagator=sdk).call(incoming)

    def shape(metadata: Metadata) -> dict[str, str | bytes]:
        headers = dict(metadata)
        version, trace_id, _, flags = str(headers.pop("traceparent")).split("-")
        return {**headers, "traceparent": f"{version}-{trace_id}-<span>-{flags}"}

    assert shape(direct) == shape(through_sdk)


def test_with_no_propagators_the_hosts_headers_pass_through_untouched() -> None:
    from opentelemetry.propagators.composite import CompositePropagator

    harness = Harness(propagator=CompositePropagator([]))  # what OTEL_PROPAGATORS=none gives
    outgoing = harness.call([("traceparent", SAMPLED_PARENT), ("baggage", "tenant=acme")])

    assert ("traceparent", SAMPLED_PARENT) in outgoing
    assert ("baggage", "tenant=acme") in outgoing
