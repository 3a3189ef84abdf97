"""The recorder turns an adaptive limiter's shedding periods into LoadShedding events that the
event log accepts, and the events plugin hands the recorder to the proxy as a shedding
listener."""

from __future__ import annotations

from sidecar.config import parse_config
from sidecar.eventlog.api.payload_checks import check_payload
from sidecar.events.plugin import EventPipeline
from sidecar.events.producer import TYPE_LOAD_SHEDDING, EventQueue, EventRecorder
from sidecar.resilience import SheddingChange
from sidecar.resilience.limits import AdaptiveLimiter, LimitSettings
from tests.support.fake_clock import FakeClock

WALL_NS = 1_700_000_000_000_000_000


def _recorder() -> tuple[EventRecorder, EventQueue]:
    queue = EventQueue(100)
    return EventRecorder("checkout", "pod-1", queue, wall_clock_ns=lambda: WALL_NS), queue


def test_a_shedding_period_becomes_a_started_and_a_stopped_event() -> None:
    recorder, queue = _recorder()
    recorder.on_shedding(SheddingChange("payments", "started", 8, 8, 1, "gradient2", 0.0))
    recorder.on_shedding(SheddingChange("payments", "stopped", 9, 3, 420, "gradient2", 2.5))
    started, stopped = queue.take(10, 0)
    for event in (started, stopped):
        assert event.type == TYPE_LOAD_SHEDDING
        assert event.stream == "checkout/pod-1"
        # what Append checks of the payload (the outbox numbers and chains the envelope)
        assert check_payload("load_shedding", event.load_shedding, "event") == "payments"
    assert (started.load_shedding.phase, started.load_shedding.limit,
            started.load_shedding.shed, started.load_shedding.duration_ms) == ("started", 8, 1, 0)
    assert (stopped.load_shedding.phase, stopped.load_shedding.shed,
            stopped.load_shedding.duration_ms, stopped.load_shedding.algorithm) == (
        "stopped", 420, 2500, "gradient2")
    assert stopped.occurred_at.ToNanoseconds() == WALL_NS


def test_a_real_limiter_reports_its_periods_to_the_recorder() -> None:
    recorder, queue = _recorder()
    clock = FakeClock()
    limiter = AdaptiveLimiter(LimitSettings(initial_limit=4, min_limit=1),
                              upstream="payments", ceiling=100, clock=clock,
                              listeners=[recorder])
    admitted = [limiter.try_acquire() for _ in range(10)]
    assert admitted.count(True) == 4
    clock.advance(5.0)
    limiter.poll()
    events = queue.take(10, 0)
    assert [e.load_shedding.phase for e in events] == ["started", "stopped"]
    assert events[1].load_shedding.shed == 6


def test_the_events_plugin_listens_to_shedding() -> None:
    config = parse_config("""
service: checkout
upstreams:
  payments: {address: 127.0.0.1:50051, routes: ["/p/"]}
eventlog: {address: 127.0.0.1:7070, outbox_path: /tmp/unused-outbox.db}
""")
    pipeline = EventPipeline(config)
    assert pipeline.plugin().shedding_listeners == (pipeline.recorder,)
