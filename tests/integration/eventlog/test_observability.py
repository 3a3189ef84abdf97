"""What operators see: /metrics over HTTP (parsed with prometheus_client), health, reflection."""

from __future__ import annotations

import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from sidecar.v1 import eventlog_pb2
from tests.integration.eventlog._server import EventLogProcess
from tests.support.events import DEFAULT_START_NS, StreamFactory

pytestmark = pytest.mark.integration

S = 1_000_000_000


def scrape(server: EventLogProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_metrics_report_log_and_projection_state_under_the_contract_names(
    eventlog: EventLogProcess,
) -> None:
    t0 = DEFAULT_START_NS
    pod = StreamFactory("metrics", "pod-1", start_ns=t0, step_ns=S)
    events = [
        pod.config_applied(["payments"], at_ns=t0),
        pod.transition("payments", "CLOSED", "OPEN", at_ns=t0 + 1 * S),
        pod.transition("payments", "OPEN", "HALF_OPEN", at_ns=t0 + 31 * S),
        pod.transition("payments", "HALF_OPEN", "CLOSED", at_ns=t0 + 32 * S),
        pod.transition("payments", "CLOSED", "OPEN", at_ns=t0 + 40 * S),
        pod.transition("payments", "OPEN", "HALF_OPEN", at_ns=t0 + 50 * S),
    ]
    eventlog.append(events)
    eventlog.append(events[:2])  # a retry: two duplicates, nothing stored
    head = eventlog.head()

    deadline = time.monotonic() + 10
    while True:
        samples = scrape(eventlog)
        if sample(samples, "eventlog_projection_position") == head:
            break
        assert time.monotonic() < deadline, "projection never reached the head"
        time.sleep(0.05)

    breaker = {"service": "metrics", "instance": "pod-1", "upstream": "payments"}
    pair = {"service": "metrics", "upstream": "payments"}
    assert sample(samples, "eventlog_head_position") == head
    assert sample(samples, "eventlog_projection_lag_events") == 0
    assert sample(samples, "eventlog_breaker_state", **breaker, state="half_open") == 1
    assert sample(samples, "eventlog_breaker_state", **breaker, state="open") == 0
    assert sample(samples, "eventlog_breaker_state", **breaker, state="closed") == 0
    assert sample(samples, "eventlog_breaker_open_seconds_total", **pair) == pytest.approx(40.0)
    assert sample(
        samples, "eventlog_breaker_transitions_total", **pair, from_state="closed",
        to_state="open",
    ) == 2
    assert sample(
        samples, "eventlog_breaker_transitions_total", **pair, from_state="half_open",
        to_state="closed",
    ) == 1
    # Counts over the whole shared log: at least ours, and every stored event counted once.
    by_type = {
        dict(labels)["type"]: value
        for (name, labels), value in samples.items()
        if name == "eventlog_events_appended_total"
    }
    assert by_type["ConfigApplied"] >= 1 and by_type["BreakerTransitioned"] >= 5
    assert sum(by_type.values()) == head
    assert (sample(samples, "eventlog_duplicates_total") or 0) >= 2
    assert (sample(samples, "eventlog_append_requests_total", outcome="ok") or 0) >= 2


def test_health_reports_serving_for_the_server_and_the_service(
    eventlog: EventLogProcess,
) -> None:
    health = health_pb2_grpc.HealthStub(eventlog.channel)

    for service in ("", "sidecar.v1.EventLog"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_and_describes_the_event_log_service(
    eventlog: EventLogProcess,
) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(eventlog.channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="sidecar.v1.EventLog"),
    ]

    listed, described = list(stub.ServerReflectionInfo(iter(requests), timeout=10))

    names = {s.name for s in listed.list_services_response.service}
    assert {"sidecar.v1.EventLog", "grpc.health.v1.Health"} <= names
    files = described.file_descriptor_response.file_descriptor_proto
    assert any(b"sidecar/v1/eventlog.proto" in f for f in files)


def test_unknown_breaker_status_is_not_found(eventlog: EventLogProcess) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        eventlog.stub.GetBreakerStatus(
            eventlog_pb2.GetBreakerStatusRequest(service="ghost", upstream="none"), timeout=10
        )

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
