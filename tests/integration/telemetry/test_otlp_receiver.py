"""The OTLP/gRPC test receiver run as its own process (as the proxy benchmark uses it)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from tests.support.procs import PYTHON, ManagedProcess, free_port, wait_for_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("mode", [["--count-only"], []], ids=["count_only", "decoding"])
def test_the_receiver_process_counts_every_span_the_sdk_exports(
        tmp_path: Path, mode: list[str]) -> None:
    port = free_port()
    with ManagedProcess([PYTHON, "-m", "tests.support.otlp_receiver", "--port", str(port),
                         *mode], tmp_path / "receiver.log", cwd=ROOT) as receiver:
        wait_for_port(port, proc=receiver.proc)
        provider = TracerProvider()
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}")))
        tracer = provider.get_tracer("test")
        for i in range(25):
            with tracer.start_as_current_span(f"span-{i}"):
                pass
        assert provider.force_flush(10_000)
        provider.shutdown()
        receiver.signal(signal.SIGTERM)
        assert receiver.wait(10) == 0
        summary = json.loads(receiver.output().strip().splitlines()[-1])

    assert summary["spans"] == 25
    assert summary["exports"] >= 1


def test_the_sidecars_exporter_sends_through_its_fast_encoder(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from sidecar.telemetry import _otlp
    from tests.support.otlp_receiver import OtlpReceiver

    batches: list[int] = []
    real = _otlp.encode_spans_fast

    def spy(spans):  # type: ignore[no-untyped-def]
        batches.append(len(spans))
        return real(spans)

    monkeypatch.setattr(_otlp, "encode_spans_fast", spy)
    with OtlpReceiver() as receiver:
        provider = TracerProvider()
        provider.add_span_processor(
            BatchSpanProcessor(_otlp.FastOTLPSpanExporter(endpoint=receiver.endpoint)))
        with provider.get_tracer("test").start_as_current_span("call", attributes={"a": 1}):
            pass
        provider.force_flush(10_000)
        provider.shutdown()
        (span,) = receiver.wait_for(lambda s: s.name == "call")

    assert batches == [1]  # if the SDK stopped calling _translate_data, this would be []
    assert span.attributes == {"a": 1}
