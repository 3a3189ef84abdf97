"""The cheap start of root call spans (sidecar.telemetry.call_spans): the same spans, ids,
sampling decisions and exemplars as the SDK's own ``start_span``, and the SDK path wherever the
fast path does not apply."""

from __future__ import annotations

import random
import threading

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import INVALID_SPAN_CONTEXT, SpanContext
from prometheus_client import CollectorRegistry

from sidecar.config import parse_config
from sidecar.telemetry.call_spans import CallIds, RootSpans, traceparent
from sidecar.telemetry.metrics import MetricsObserver, SidecarMetrics
from sidecar.telemetry.observer import TelemetryObserver
from sidecar.telemetry.tracing import SidecarSampler, TracingObserver, setup_tracing
from tests.unit.telemetry.builders import call_info

LOW_64 = (1 << 64) - 1
HOST_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
Metadata = list[tuple[str, str | bytes]]
CONFIG = """
service: checkout
upstreams:
  payments: {address: "127.0.0.1:50051", routes: ["/payments.v1.Payments/"]}
"""


class Tracing:
    """A provider with the sidecar's sampler, ``ids`` (None: the SDK's default) and an
    in-memory exporter; one call observer with metrics on it."""

    def __init__(self, ratio: float, ids: CallIds | None = None) -> None:
        self.exporter = InMemorySpanExporter()
        self.sampler = SidecarSampler(ratio)
        provider = (TracerProvider(sampler=self.sampler) if ids is None
                    else TracerProvider(sampler=self.sampler, id_generator=ids))
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = provider.get_tracer("test")
        self.tracing = TracingObserver(self.tracer)
        self.registry = CollectorRegistry()
        self.observer = TelemetryObserver(self.tracing, MetricsObserver(
            SidecarMetrics(self.registry)))

    def call(self, metadata: Metadata | None = None) -> str:
        """One call; the traceparent it sent upstream."""
        outgoing: Metadata = []
        with self.observer.start_call(call_info(metadata=tuple(metadata or ()))) as scope:
            scope.outgoing_metadata(outgoing)
            scope.finish(grpc.StatusCode.OK, 0.001)
        (value,) = [v for k, v in outgoing if k == "traceparent"]
        assert isinstance(value, str)
        return value

    def exemplar_trace_ids(self) -> set[str]:
        return {sample.exemplar.labels["trace_id"]
                for family in self.registry.collect()
                if family.name == "sidecar_request_duration_seconds"
                for sample in family.samples if sample.exemplar is not None}


def test_setup_tracing_gives_the_observer_the_fast_path_and_a_plain_provider_does_not() -> None:
    setup = setup_tracing(parse_config(CONFIG), environ={})
    assert TracingObserver(setup.tracer)._roots is not None
    assert Tracing(0.5).tracing._roots is None
    assert Tracing(0.5, CallIds()).tracing._roots is not None


def test_sdk_self_metrics_keep_every_span_on_the_sdk_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    tracer = TracerProvider(sampler=SidecarSampler(0.1), id_generator=CallIds()).get_tracer("t")
    assert RootSpans.for_tracer(tracer, SidecarSampler) is None


@pytest.mark.parametrize("ratio", [0.0, 0.3, 1.0])
def test_a_call_is_sampled_exactly_when_its_trace_id_is_under_the_ratios_bound(
        ratio: float) -> None:
    random.seed(7)
    tracing = Tracing(ratio, CallIds())
    sent = [tracing.call() for _ in range(400)]
    bound = TraceIdRatioBased(ratio).bound
    recorded = {format(s.context.trace_id, "032x") for s in tracing.exporter.get_finished_spans()}
    for header in sent:
        trace_id = header.split("-")[1]
        assert (trace_id in recorded) == (int(trace_id, 16) & LOW_64 < bound), header
    assert len(recorded) == sum(int(t.split("-")[1], 16) & LOW_64 < bound for t in sent)
    if ratio == 0.3:
        assert 80 <= len(recorded) <= 160  # about 120 of 400
    # the latency bucket keeps the exemplar of the last sampled call (every call is 1 ms)
    kept = [t.split("-")[1] for t in sent if t.split("-")[1] in recorded]
    assert tracing.exemplar_trace_ids() == set(kept[-1:])


def test_unsampled_calls_send_the_same_traceparent_shape_as_the_sdk_path() -> None:
    fast, sdk = Tracing(0.0, CallIds()).call(), Tracing(0.0).call()
    fast_parts, sdk_parts = fast.split("-"), sdk.split("-")
    assert [len(p) for p in fast_parts] == [len(p) for p in sdk_parts] == [2, 32, 16, 2]
    assert fast_parts[0] == sdk_parts[0] and fast_parts[3] == sdk_parts[3]  # version, flags
    assert int(fast_parts[1], 16) and int(fast_parts[2], 16)  # valid ids


def test_the_sampled_traceparent_has_the_same_flags_on_both_paths() -> None:
    assert Tracing(1.0, CallIds()).call().split("-")[3] == Tracing(1.0).call().split("-")[3]


def test_a_call_with_the_hosts_trace_context_stays_in_the_hosts_trace() -> None:
    tracing = Tracing(0.0, CallIds())
    sent = tracing.call([("traceparent", f"00-{HOST_TRACE}-00f067aa0ba902b7-01")])
    assert sent.split("-")[1] == HOST_TRACE
    (span,) = tracing.exporter.get_finished_spans()  # parent sampled: ratio 0 does not matter
    assert format(span.context.trace_id, "032x") == HOST_TRACE


def test_a_ratio_changed_on_reload_applies_to_the_next_call() -> None:
    tracing = Tracing(0.0, CallIds())
    tracing.call()
    tracing.sampler.set_ratio(1.0)
    tracing.call()
    assert len(tracing.exporter.get_finished_spans()) == 1


def test_a_told_trace_id_is_taken_only_on_its_own_thread() -> None:
    ids = CallIds()
    ids.tell(42)
    other: list[int] = []
    thread = threading.Thread(target=lambda: other.append(ids.generate_trace_id()))
    thread.start()
    thread.join()
    assert other[0] != 42
    assert ids.generate_trace_id() == 42
    assert ids.generate_trace_id() != 42  # told once, taken once


def test_an_unsampled_span_context_is_the_one_the_api_would_build() -> None:
    tracer = TracerProvider(sampler=SidecarSampler(0.0), id_generator=CallIds()).get_tracer("t")
    roots = RootSpans.for_tracer(tracer, SidecarSampler)
    assert roots is not None
    context = roots.start("payments.v1.Payments/Charge", {}).get_span_context()
    assert context == SpanContext(context.trace_id, context.span_id, False, context.trace_flags)
    assert context.is_valid and not context.is_remote and not context.trace_flags.sampled
    assert traceparent(context) == (f"00-{context.trace_id:032x}-{context.span_id:016x}-"
                                    f"{context.trace_flags:02x}")
    assert traceparent(INVALID_SPAN_CONTEXT) is None


def test_a_disabled_tracer_gets_the_sdks_invalid_span_and_no_told_id_is_left(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ids = CallIds()
    tracer = TracerProvider(sampler=SidecarSampler(1.0), id_generator=ids).get_tracer("t")
    roots = RootSpans.for_tracer(tracer, SidecarSampler)
    assert roots is not None
    monkeypatch.setattr(tracer, "_is_enabled", lambda: False)
    span = roots.start("payments.v1.Payments/Charge", {})
    assert not span.get_span_context().is_valid and not span.is_recording()
    assert getattr(ids._told, "trace_id", 0) == 0
