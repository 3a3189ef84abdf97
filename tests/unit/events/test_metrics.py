"""The event pipeline's metrics, read at scrape time from a fresh registry."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from sidecar.events.metrics import EventsCollector
from sidecar.events.outbox import GENESIS_HEAD, Outbox, OutboxWriter
from sidecar.events.producer import EventQueue
from sidecar.events.settings import EventsSettings
from sidecar.events.shipper import Shipper
from tests.unit.events._support import STREAM, FakeClock, FakeEventLog, new_event

NOW_NS = 1_700_000_100_000_000_000


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / "outbox.db", max_events=3) as box:
        box.rebase(STREAM, GENESIS_HEAD)
        yield box


def _registry(queue: EventQueue, outbox: Outbox | None,
              shipper: Shipper | None) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(EventsCollector(queue=queue, outbox=lambda: outbox,
                                      shipper=lambda: shipper, wall_clock_ns=lambda: NOW_NS))
    return registry


def test_every_family_is_exported_at_zero_before_the_pipeline_starts() -> None:
    registry = _registry(EventQueue(10), None, None)
    assert registry.get_sample_value("sidecar_outbox_pending_events") == 0
    assert registry.get_sample_value("sidecar_events_shipped_total") == 0
    assert registry.get_sample_value("sidecar_outbox_oldest_pending_age_seconds") == 0
    assert registry.get_sample_value("sidecar_events_dropped_total",
                                     {"reason": "outbox_full"}) == 0
    assert registry.get_sample_value("sidecar_eventlog_breaker_state", {"state": "closed"}) == 1
    assert registry.get_sample_value("sidecar_eventlog_rollbacks_total") == 0


def test_pending_age_and_drops_follow_the_outbox(outbox: Outbox) -> None:
    queue = EventQueue(1)
    queue.offer(new_event())
    queue.offer(new_event())  # queue full: dropped
    writer = OutboxWriter(queue, outbox, batch_size=10)
    writer.write_once(timeout_s=0)
    for _ in range(3):
        queue.offer(new_event(occurred_at_ns=NOW_NS))
        writer.write_once(timeout_s=0)  # the third one does not fit: outbox_full
    registry = _registry(queue, outbox, None)

    assert registry.get_sample_value("sidecar_outbox_pending_events") == 3
    assert registry.get_sample_value("sidecar_outbox_oldest_pending_age_seconds") == 100.0
    assert registry.get_sample_value("sidecar_events_dropped_total",
                                     {"reason": "queue_full"}) == 1
    assert registry.get_sample_value("sidecar_events_dropped_total",
                                     {"reason": "outbox_full"}) == 1


def test_shipped_and_failures_by_code_follow_the_shipper(outbox: Outbox) -> None:
    log, clock = FakeEventLog(), FakeClock()
    shipper = Shipper(outbox, log, EventsSettings(linger_ms=0), clock=clock,
                      rng=random.Random(1))
    outbox.append([new_event(), new_event()])
    log.down = True
    clock.advance(shipper.step())
    log.down = False
    clock.advance(shipper.step())
    registry = _registry(EventQueue(10), outbox, shipper)

    assert registry.get_sample_value("sidecar_events_shipped_total") == 2
    assert registry.get_sample_value("sidecar_events_ship_failures_total",
                                     {"code": "UNAVAILABLE"}) == 1
    assert registry.get_sample_value("sidecar_outbox_pending_events") == 0
    assert registry.get_sample_value("sidecar_outbox_oldest_pending_age_seconds") == 0
    assert b"sidecar_events_shipped_total 2.0" in generate_latest(registry)
