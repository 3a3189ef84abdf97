"""Attempt spans and retry/hedge/shed span events, with the SDK's in-memory exporter."""

from __future__ import annotations

import grpc
from opentelemetry.trace import StatusCode

from tests.unit.telemetry.builders import call_info
from tests.unit.telemetry.test_tracing import Harness


def test_each_attempt_is_a_child_span_of_the_call_with_its_endpoint_status_and_outcome() -> None:
    harness = Harness()
    with harness.observer.start_call(call_info()) as scope:
        scope.attempt_started(1, "10.0.0.1:50051", False)
        scope.attempt_ended(1, grpc.StatusCode.UNAVAILABLE, 0.01, "retried")
        scope.retry("UNAVAILABLE", 0.025)
        scope.attempt_started(2, "10.0.0.2:50051", False)
        scope.hedge(3)
        scope.attempt_started(3, "10.0.0.3:50051", True)
        scope.attempt_ended(3, grpc.StatusCode.OK, 0.01, "committed")
        scope.attempt_ended(2, None, 0.02, "lost")
        scope.finish(grpc.StatusCode.OK, 0.05)
    (call,) = [s for s in harness.spans() if s.name != "sidecar.attempt"]
    attempts = sorted(harness.spans("sidecar.attempt"),
                      key=lambda s: s.attributes["sidecar.attempt"])
    assert [a.attributes["sidecar.attempt"] for a in attempts] == [1, 2, 3]
    assert all(a.parent is not None and a.parent.span_id == call.context.span_id
               and a.context.trace_id == call.context.trace_id for a in attempts)
    first, second, hedge = attempts
    assert first.attributes["server.address"] == "10.0.0.1"
    assert first.attributes["server.port"] == 50051
    assert first.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert first.attributes["sidecar.attempt.outcome"] == "retried"
    assert first.status.status_code is StatusCode.ERROR
    assert second.attributes["sidecar.attempt.outcome"] == "lost"
    assert "rpc.grpc.status_code" not in second.attributes
    assert hedge.attributes["sidecar.attempt.hedge"] is True
    assert hedge.attributes["sidecar.attempt.outcome"] == "committed"
    events = {e.name: dict(e.attributes or {}) for e in call.events}
    assert events["sidecar.retry"] == {"sidecar.retry.reason": "UNAVAILABLE",
                                       "sidecar.retry.delay_ms": 25.0}
    assert events["sidecar.hedge"] == {"sidecar.hedge.attempt": 3}


def test_refused_retries_and_shedding_are_events_and_unended_attempts_still_end() -> None:
    harness = Harness()
    with harness.observer.start_call(call_info()) as scope:
        scope.attempt_started(1, "10.0.0.1:50051", False)  # never reported ended
        scope.retry_refused("budget")
        scope.shed(8, 8)
        scope.finish(grpc.StatusCode.UNAVAILABLE, 0.01)
    (attempt,) = harness.spans("sidecar.attempt")
    assert attempt.attributes["sidecar.attempt.outcome"] == "failed"
    (call,) = [s for s in harness.spans() if s.name != "sidecar.attempt"]
    events = {e.name: dict(e.attributes or {}) for e in call.events}
    assert events["sidecar.retry_refused"] == {"sidecar.retry.refused": "budget"}
    assert events["sidecar.shed"] == {"sidecar.limit": 8, "sidecar.in_flight": 8}


def test_an_unsampled_call_records_no_attempt_spans() -> None:
    harness = Harness(ratio=0.0)
    with harness.observer.start_call(call_info()) as scope:
        scope.attempt_started(1, "10.0.0.1:50051", False)
        scope.attempt_ended(1, grpc.StatusCode.OK, 0.01, "committed")
        scope.finish(grpc.StatusCode.OK, 0.01)
    assert harness.spans() == []
