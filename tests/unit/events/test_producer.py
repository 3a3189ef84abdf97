"""The recorder turns breaker changes into typed events; the queue never blocks the call."""

from __future__ import annotations

import logging
import threading
import uuid

import pytest
from opentelemetry.sdk.trace import TracerProvider

from sidecar.breaker import BreakerSettings, CircuitBreaker, Mode, ModeChange, State
from sidecar.events.producer import EventQueue, EventRecorder, current_trace_id
from sidecar.v1 import events_pb2
from tests.unit.events._support import FakeClock, transition


def _recorder(maxsize: int = 100) -> tuple[EventRecorder, EventQueue]:
    queue = EventQueue(maxsize)
    return EventRecorder("checkout", "pod-1", queue), queue


def test_transition_becomes_a_typed_event_in_the_sidecars_stream() -> None:
    recorder, queue = _recorder()
    recorder.on_transition(transition("payments/pkg.Svc/Charge", State.CLOSED, State.OPEN,
                                      at_wall=1_700_000_000.25))

    [event] = queue.take(10, timeout_s=0)
    assert event.stream == "checkout/pod-1"
    assert event.type == "BreakerTransitioned"
    assert uuid.UUID(event.event_id).version == 7
    assert event.occurred_at.ToNanoseconds() == 1_700_000_000_250_000_000
    payload = event.breaker_transitioned
    assert (payload.service, payload.instance) == ("checkout", "pod-1")
    assert (payload.upstream, payload.breaker) == ("payments", "payments/pkg.Svc/Charge")
    assert payload.from_state == events_pb2.BREAKER_STATE_CLOSED
    assert payload.to_state == events_pb2.BREAKER_STATE_OPEN
    assert payload.reason == "failure_rate"
    assert payload.window.failures == 6 and payload.window.failure_rate == pytest.approx(0.6)
    assert payload.open_duration_ms == 1500 and payload.trip_streak == 1
    assert payload.mode == events_pb2.BREAKER_MODE_ENFORCE


def test_the_recorder_leaves_numbering_and_hashing_to_the_outbox() -> None:
    recorder, queue = _recorder()
    recorder.on_transition(transition())
    [event] = queue.take(10, timeout_s=0)
    assert event.version == 0 and event.prev_hash == b"" and event.hash == b""


def test_mode_change_and_applied_config_become_events() -> None:
    recorder, queue = _recorder()
    recorder.on_mode_change(ModeChange("payments", Mode.ENFORCE, Mode.FORCED_OPEN, "admin",
                                       1_700_000_001.0))
    recorder.config_applied("ab" * 32, ["payments", "inventory"], "reload")

    mode, config = queue.take(10, timeout_s=0)
    assert mode.type == "BreakerModeChanged"
    assert mode.breaker_mode_changed.to_mode == events_pb2.BREAKER_MODE_FORCED_OPEN
    assert mode.breaker_mode_changed.source == "admin"
    assert config.type == "ConfigApplied"
    assert list(config.config_applied.upstreams) == ["inventory", "payments"]
    assert config.config_applied.source == "reload"
    assert config.config_applied.config_sha256 == "ab" * 32


def test_event_carries_the_trace_id_of_the_call_that_caused_it() -> None:
    tracer = TracerProvider().get_tracer("test")
    clock = FakeClock()
    recorder, queue = _recorder()
    breaker = CircuitBreaker("payments", BreakerSettings(consecutive_failures=1), clock=clock)
    breaker.add_listener(recorder)

    with tracer.start_as_current_span("call") as span:
        permit = breaker.try_acquire()
        assert permit is not None
        breaker.record(permit, duration_s=0.01, failed=True)
        expected = format(span.get_span_context().trace_id, "032x")

    [event] = queue.take(10, timeout_s=0)
    assert event.breaker_transitioned.to_state == events_pb2.BREAKER_STATE_OPEN
    assert event.trace_id == expected


def test_trace_id_is_empty_outside_any_span() -> None:
    assert current_trace_id() == ""
    recorder, queue = _recorder()
    recorder.on_transition(transition())
    assert queue.take(1, timeout_s=0)[0].trace_id == ""


def test_full_queue_drops_and_counts_instead_of_blocking(caplog: pytest.LogCaptureFixture) -> None:
    recorder, queue = _recorder(maxsize=2)
    with caplog.at_level(logging.ERROR, logger="sidecar.events"):
        for _ in range(5):
            recorder.on_transition(transition())  # returns at once even with nobody draining

    assert queue.depth() == 2
    assert queue.dropped == 3
    assert "event queue is full" in caplog.text


def test_calls_keep_flowing_through_a_breaker_whose_event_queue_is_full() -> None:
    clock = FakeClock()
    recorder, queue = _recorder(maxsize=1)
    breaker = CircuitBreaker("payments", BreakerSettings(consecutive_failures=1, open_jitter=0.0,
                                                         half_open_probes=1), clock=clock)
    breaker.add_listener(recorder)
    trips = 0
    for _ in range(50):  # trip, wait, probe ok -> closed; 3 transitions a round, none drained
        permit = breaker.try_acquire()
        assert permit is not None
        breaker.record(permit, 0.001, failed=True)
        trips += 1
        clock.advance(120.0)
        probe = breaker.try_acquire()
        assert probe is not None and probe.probe
        breaker.record(probe, 0.001, failed=False)
        assert breaker.state is State.CLOSED

    assert queue.depth() == 1
    assert queue.dropped == trips * 3 - 1


def test_concurrent_producers_lose_nothing_while_there_is_room() -> None:
    recorder, queue = _recorder(maxsize=10_000)

    def produce() -> None:
        for _ in range(500):
            recorder.on_transition(transition())

    threads = [threading.Thread(target=produce) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    events = queue.take(10_000, timeout_s=0)
    assert len(events) == 4000 and queue.dropped == 0
    assert len({event.event_id for event in events}) == 4000


def test_queue_refuses_a_nonpositive_size() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        EventQueue(0)
