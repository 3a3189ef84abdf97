"""Endpoint events end to end: a real ``sidecar proxy`` over three real upstream processes (one
failing), a real ``sidecar eventlog serve`` and a real OTLP receiver.

The first endpoint set is an ``EndpointsChanged`` at start; the failing endpoint is ejected
inside a real call (the ``EndpointEjected`` carries that call's trace id and the
``endpoint.ejected`` span links to that call's span, which went to the failing endpoint); its
ejection time is up and a later call's pick brings it back (``EndpointReturned`` with that
call's trace id). All three arrive in the event log in that order, read back through
``sidecar events query``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.integration.eventlog._server import EventLogProcess
from tests.integration.events._support import SERVICE, query_events, wait_until
from tests.integration.telemetry._calls import HostTrace
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

pytestmark = pytest.mark.integration

METHOD = "/orders.Svc/Unary"
EJECTION_MS = 800
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50"}
ENDPOINT_TYPES = ("EndpointsChanged", "EndpointEjected", "EndpointReturned")


def _config(endpoints: list[str], eventlog: str, outbox: Path, otlp: str) -> dict[str, Any]:
    return {
        "service": SERVICE,
        "instance": "pod-1",
        "upstreams": {"orders": {
            "endpoints": endpoints, "routes": ["/orders."], "balancer": "round_robin",
            "outlier_detection": {"consecutive_failures": 3, "base_ejection_ms": EJECTION_MS,
                                  "max_ejection_ms": EJECTION_MS},
            # the upstream as a whole stays healthy: one failure in three never trips it
            "breaker": {"failure_rate": 0.9, "consecutive_failures": 20},
        }},
        "eventlog": {"address": eventlog, "outbox_path": str(outbox), "flush_interval_ms": 100},
        "tracing": {"otlp_endpoint": otlp, "sample_ratio": 1.0},
    }


def _call(channel: grpc.Channel) -> tuple[str, grpc.StatusCode]:
    """One call with a fresh sampled host trace; its trace id and the status the host got."""
    host = HostTrace.new()
    try:
        channel.unary_unary(METHOD)(b"ping", metadata=(("traceparent", host.traceparent),),
                                    timeout=5)
        return host.trace_id, grpc.StatusCode.OK
    except grpc.RpcError as error:
        return host.trace_id, error.code()  # type: ignore[attr-defined]


def test_endpoint_events_reach_the_log_in_order_with_the_trace_of_the_causing_call(
        tmp_path: Path) -> None:
    (tmp_path / "log").mkdir()
    with UpstreamProcess(tmp_path) as first, UpstreamProcess(tmp_path) as second, \
            UpstreamProcess(tmp_path) as sick, OtlpReceiver() as receiver, \
            EventLogProcess(tmp_path / "log") as log:
        sick.configure("orders.Svc", code="UNAVAILABLE", details="replica sick")
        endpoints = [first.address, second.address, sick.address]
        config = _config(endpoints, log.address, tmp_path / "outbox.db", receiver.endpoint)
        calls: dict[str, grpc.StatusCode] = {}
        found: dict[str, list[dict[str, Any]]] = {}

        def endpoint_events() -> list[dict[str, Any]]:
            return [e for e in query_events(log.address, "--upstream", "orders")
                    if e["type"] in ENDPOINT_TYPES]

        def returned() -> bool:
            for _ in range(5):
                trace_id, code = _call(channel)
                calls[trace_id] = code
                time.sleep(0.02)
            found["events"] = endpoint_events()
            return any(e["type"] == "EndpointReturned" for e in found["events"])

        with SidecarProcess(tmp_path, config, env=FAST_EXPORT) as sidecar, \
                grpc.insecure_channel(sidecar.address) as channel:
            wait_until(returned, "the sick endpoint to be ejected and come back", timeout_s=30)
            sidecar_log = sidecar.process.output()

    events = found["events"]
    print("endpoint events:", [(e["global_position"], e["type"]) for e in events])
    print("calls by code:", {c.name: list(calls.values()).count(c) for c in set(calls.values())})
    changed = events[0]
    ejected = next(e for e in events if e["type"] == "EndpointEjected")
    back = next(e for e in events if e["type"] == "EndpointReturned")
    assert changed["type"] == "EndpointsChanged"
    assert changed["global_position"] < ejected["global_position"] < back["global_position"]
    assert changed["payload"]["added"] == sorted(endpoints)
    assert changed["payload"]["count"] == 3 and changed["payload"]["source"] == "endpoints"
    assert changed["trace_id"] == ""  # the set at start: no call behind it

    assert ejected["payload"]["endpoint"] == sick.address
    assert ejected["payload"]["reason"] == "EJECTION_REASON_CONSECUTIVE_FAILURES"
    assert ejected["payload"]["consecutive_failures"] == 3
    assert ejected["payload"]["ejections_in_a_row"] == 1
    assert int(ejected["payload"]["ejection_ms"]) == EJECTION_MS  # uint64: a JSON string
    assert calls.get(ejected["trace_id"]) is grpc.StatusCode.UNAVAILABLE  # the tipping call
    assert back["payload"]["endpoint"] == sick.address
    assert int(back["payload"]["ejected_for_ms"]) >= EJECTION_MS
    assert back["trace_id"] in calls and back["trace_id"] != ejected["trace_id"]

    # the ejection span is linked to the span of the very call that tipped the endpoint over
    (call_span,) = receiver.wait_for(lambda s: s.trace_id == ejected["trace_id"]
                                     and s.name == "orders.Svc/Unary")
    assert call_span.attributes["server.address"] == sick.host
    assert call_span.attributes["server.port"] == sick.port
    assert call_span.event("endpoint.ejected") is not None
    ejection_spans = receiver.wait_for(lambda s: s.name == "endpoint.ejected")
    linked = [s for s in ejection_spans
              if any(link.span_id == call_span.span_id for link in s.links)]
    assert len(linked) == 1, ejection_spans
    (span,) = linked
    (link,) = span.links
    assert link.trace_id == call_span.trace_id
    assert link.attributes == {"sidecar.link": "caused_by"}
    assert span.trace_id != call_span.trace_id and span.parent_span_id == ""
    assert span.attributes["sidecar.endpoint"] == sick.address
    assert span.attributes["endpoint.reason"] == "consecutive_failures"
    assert span.attributes["endpoint.ejection_ms"] == EJECTION_MS
    (back_call,) = receiver.wait_for(lambda s: s.trace_id == back["trace_id"]
                                     and s.name == "orders.Svc/Unary")
    returns = receiver.wait_for(lambda s: s.name == "endpoint.returned")
    assert any(link.span_id == back_call.span_id for s in returns for link in s.links)

    # and the log line of the ejection carries the same trace id
    lines = [json.loads(line) for line in sidecar_log.splitlines() if line.startswith("{")]
    logged = next(line for line in lines if line.get("event") == "endpoint_ejected")
    assert logged["msg"].startswith(f"upstream orders: endpoint {sick.address} ejected for "
                                    "0.8 s (3 consecutive failures, ejection 1 in a row)")
    assert logged["trace_id"] == ejected["trace_id"]
