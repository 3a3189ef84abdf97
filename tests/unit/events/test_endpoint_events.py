"""The recorder turns a balancer's records into EndpointsChanged / EndpointEjected /
EndpointReturned events: every field, the reason enum, the causing call's trace id,
``occurred_at`` from the record's own clock; and the events plugin puts it on every balancer."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from sidecar.balancer import (
    Balancer,
    BalancerSettings,
    Ejection,
    EndpointsChange,
    OutlierSettings,
    Return,
)
from sidecar.config import parse_config
from sidecar.events.plugin import EventPipeline
from sidecar.events.producer import EventQueue, EventRecorder
from sidecar.proxy.app import ProxyApp
from sidecar.v1 import events_pb2
from tests.support.procs import free_port
from tests.unit.events._support import FakeClock, FakeEventLog, assert_chain

A, B, C = "10.0.0.1:50051", "10.0.0.2:50051", "10.0.0.3:50051"
WALL = 1_700_000_000.0


def _recorder() -> tuple[EventRecorder, EventQueue]:
    queue = EventQueue(100)
    return EventRecorder("checkout", "pod-1", queue), queue


def _balancer(recorder: EventRecorder, clock: FakeClock, **outlier: object) -> Balancer[str]:
    balancer: Balancer[str] = Balancer(
        "payments", BalancerSettings(), OutlierSettings(**outlier),  # type: ignore[arg-type]
        clock=clock, wall_clock=lambda: clock.now + WALL, rng=random.Random(0),
        listeners=[recorder])
    balancer.update_endpoints({A: A, B: B, C: C}, "endpoints")
    return balancer


def _fail(balancer: Balancer[str], address: str, n: int) -> None:
    (endpoint,) = [e for e in balancer.endpoints() if e.address == address]
    for _ in range(n):
        balancer.finish(endpoint, balancer.start(endpoint), failed=True)


def test_a_set_change_becomes_an_endpoints_changed_event() -> None:
    recorder, queue = _recorder()
    recorder.on_endpoints_changed(EndpointsChange(
        upstream="payments", added=(C,), removed=(A, B), count=1, source="dns",
        at_wall=1_700_000_000.125))

    [event] = queue.take(10, timeout_s=0)
    assert event.type == "EndpointsChanged" and event.WhichOneof("payload") == "endpoints_changed"
    assert event.stream == "checkout/pod-1"
    assert uuid.UUID(event.event_id).version == 7
    assert event.occurred_at.ToNanoseconds() == 1_700_000_000_125_000_000
    assert event.trace_id == ""  # no call behind a discovery refresh
    payload = event.endpoints_changed
    assert (payload.service, payload.instance, payload.upstream) == ("checkout", "pod-1",
                                                                     "payments")
    assert list(payload.added) == [C] and list(payload.removed) == [A, B]
    assert payload.count == 1 and payload.source == "dns"
    assert event.version == 0 and event.hash == b""  # the outbox numbers and chains


@pytest.mark.parametrize(("reason", "expected"), [
    ("consecutive_failures", events_pb2.EJECTION_REASON_CONSECUTIVE_FAILURES),
    ("failure_rate", events_pb2.EJECTION_REASON_FAILURE_RATE),
    ("something_new", events_pb2.EJECTION_REASON_UNSPECIFIED),
])
def test_an_ejection_becomes_an_endpoint_ejected_event(reason: str, expected: int) -> None:
    recorder, queue = _recorder()
    recorder.on_ejected(Ejection(
        upstream="payments", endpoint=A, reason=reason, ejection_s=60.0, ejections_in_a_row=2,
        consecutive_failures=5, failure_rate=0.625, calls=8, at_wall=1_700_000_001.5))

    [event] = queue.take(10, timeout_s=0)
    assert event.type == "EndpointEjected" and event.WhichOneof("payload") == "endpoint_ejected"
    assert event.occurred_at.ToNanoseconds() == 1_700_000_001_500_000_000
    payload = event.endpoint_ejected
    assert (payload.service, payload.instance, payload.upstream, payload.endpoint) == (
        "checkout", "pod-1", "payments", A)
    assert payload.reason == expected
    assert payload.ejection_ms == 60_000 and payload.ejections_in_a_row == 2
    assert payload.consecutive_failures == 5 and payload.calls == 8
    assert payload.failure_rate == pytest.approx(0.625)


def test_a_return_becomes_an_endpoint_returned_event() -> None:
    recorder, queue = _recorder()
    recorder.on_returned(Return(upstream="payments", endpoint=B, ejected_for_s=29.9996,
                                at_wall=1_700_000_030.0))
    [event] = queue.take(10, timeout_s=0)
    assert event.type == "EndpointReturned"
    payload = event.endpoint_returned
    assert (payload.upstream, payload.endpoint, payload.ejected_for_ms) == ("payments", B, 30000)
    assert event.occurred_at.ToNanoseconds() == 1_700_000_030_000_000_000


def test_events_of_a_real_balancer_carry_the_trace_id_of_the_call_that_caused_them() -> None:
    tracer = TracerProvider().get_tracer("test")
    clock = FakeClock()
    recorder, queue = _recorder()
    balancer = _balancer(recorder, clock, base_ejection_ms=1000)
    _fail(balancer, A, 4)
    with tracer.start_as_current_span("failing call") as failing:
        _fail(balancer, A, 1)
    clock.advance(1.0)
    with tracer.start_as_current_span("next call") as noticing:
        balancer.pick()

    changed, ejected, back = queue.take(10, timeout_s=0)
    assert [e.type for e in (changed, ejected, back)] == [
        "EndpointsChanged", "EndpointEjected", "EndpointReturned"]
    assert list(changed.endpoints_changed.added) == [A, B, C]
    assert changed.endpoints_changed.source == "endpoints"
    assert changed.endpoints_changed.count == 3 and changed.trace_id == ""
    assert ejected.trace_id == format(failing.get_span_context().trace_id, "032x")
    assert ejected.endpoint_ejected.reason == events_pb2.EJECTION_REASON_CONSECUTIVE_FAILURES
    assert ejected.endpoint_ejected.consecutive_failures == 5
    assert ejected.endpoint_ejected.ejection_ms == 1000
    assert ejected.endpoint_ejected.ejections_in_a_row == 1
    assert ejected.occurred_at.ToNanoseconds() == 1_700_001_000_000_000_000  # clock 1000 + WALL
    assert back.occurred_at.ToNanoseconds() == 1_700_001_001_000_000_000
    assert back.trace_id == format(noticing.get_span_context().trace_id, "032x")
    assert back.endpoint_returned.ejected_for_ms == 1000


def test_a_full_queue_drops_endpoint_events_like_transitions() -> None:
    queue = EventQueue(1)
    recorder = EventRecorder("checkout", "pod-1", queue)
    recorder.on_returned(Return("payments", A, 1.0, WALL))
    recorder.on_returned(Return("payments", B, 1.0, WALL))  # never blocks, never raises
    assert queue.dropped == 1
    assert [e.endpoint_returned.endpoint for e in queue.take(10, timeout_s=0)] == [A]


def _config(tmp_path: Path) -> str:
    return f"""
service: checkout
instance: pod-1
listen: 127.0.0.1:{free_port()}
admin_listen: 127.0.0.1:{free_port()}
upstreams:
  payments:
    endpoints: ["127.0.0.1:1", "127.0.0.1:2"]
    routes: ["/payments.v1.Payments/"]
eventlog: {{address: '127.0.0.1:7070', outbox_path: '{tmp_path}/outbox.db'}}
"""


def test_the_plugin_registers_the_recorder_on_every_balancer(tmp_path: Path) -> None:
    pipeline = EventPipeline(parse_config(_config(tmp_path)), exporter=FakeEventLog())
    plugin = pipeline.plugin()
    assert plugin.endpoint_listeners == (pipeline.recorder,)
    assert plugin.breaker_listeners == (pipeline.recorder,)


async def test_in_a_proxy_the_first_endpoint_set_reaches_the_log_in_the_chain(
        tmp_path: Path) -> None:
    log = FakeEventLog()
    config = parse_config(_config(tmp_path))
    pipeline = EventPipeline(config, exporter=log)
    app = ProxyApp(config, plugins=[pipeline.plugin()])
    await app.start()
    await app.stop(grace_s=0)

    events = log.events("checkout/pod-1")
    assert [e.type for e in events] == ["EndpointsChanged", "ConfigApplied"]
    assert list(events[0].endpoints_changed.added) == ["127.0.0.1:1", "127.0.0.1:2"]
    assert events[0].endpoints_changed.source == "endpoints"
    assert_chain(events)
