"""Event log metrics: computed at scrape time from projection state, under the contract names."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from sidecar.eventlog.follower import ProjectionFollower, server_projections
from sidecar.eventlog.metrics import (
    AppendCounters,
    BreakerState,
    EventLogCollector,
    MetricsSnapshot,
    take_snapshot,
)
from sidecar.eventlog.projections import rebuild
from sidecar.eventlog.sqlite_store import SqliteEventStore
from sidecar.eventlog.store import EventStore
from tests.support.events import DEFAULT_START_NS, StreamFactory

S = 1_000_000_000


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    store = SqliteEventStore(tmp_path / "events.db")
    yield store
    await store.close()


def registry_for(snapshot: MetricsSnapshot) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(EventLogCollector(lambda: snapshot))
    return registry


def test_collector_reports_the_snapshot_under_the_contract_names() -> None:
    counters = AppendCounters()
    counters.appended(stored=7, duplicates=2)
    counters.rejected("conflict")
    snapshot = MetricsSnapshot(
        events_by_type={"BreakerTransitioned": 6, "ConfigApplied": 1},
        breakers=(BreakerState("checkout", "pod-1", "payments", "open"),),
        open_seconds={("checkout", "payments"): 12.5},
        transitions={("checkout", "payments", "closed", "open"): 3},
        head_position=7,
        projection_position=5,
        counters=counters.copy(),
    )
    registry = registry_for(snapshot)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("eventlog_events_appended_total", type="BreakerTransitioned") == 6
    assert value("eventlog_events_appended_total", type="ConfigApplied") == 1
    assert value("eventlog_duplicates_total") == 2
    breaker = {"service": "checkout", "instance": "pod-1", "upstream": "payments"}
    assert value("eventlog_breaker_state", **breaker, state="open") == 1
    assert value("eventlog_breaker_state", **breaker, state="closed") == 0
    assert value("eventlog_breaker_state", **breaker, state="half_open") == 0
    pair = {"service": "checkout", "upstream": "payments"}
    assert value("eventlog_breaker_open_seconds_total", **pair) == 12.5
    assert value(
        "eventlog_breaker_transitions_total",
        **pair, from_state="closed", to_state="open",
    ) == 3
    assert value("eventlog_head_position") == 7
    assert value("eventlog_projection_position") == 5
    assert value("eventlog_projection_lag_events") == 2
    assert value("eventlog_append_requests_total", outcome="ok") == 1
    assert value("eventlog_append_requests_total", outcome="conflict") == 1
    assert value("eventlog_append_events_total") == 7


def test_registering_the_collector_takes_no_snapshot() -> None:
    def snapshot() -> MetricsSnapshot:
        raise AssertionError("snapshot taken at registration")

    registry = CollectorRegistry()
    registry.register(EventLogCollector(snapshot))  # must not call snapshot()


async def test_log_derived_metrics_count_each_event_once_across_restart_and_rebuild(
    store: EventStore,
) -> None:
    pod = StreamFactory("checkout", "pod-1", start_ns=DEFAULT_START_NS, step_ns=S)
    await store.append([pod.config_applied(["payments"]), *pod.transitions(6)])
    follower = ProjectionFollower(store)
    await follower.load()
    await follower.step()
    await follower.save()
    before = take_snapshot(follower, AppendCounters(), head_position=7)

    await rebuild(store, server_projections())  # replaces the checkpoints
    restarted = ProjectionFollower(store)
    await restarted.load()
    await restarted.step()
    after = take_snapshot(restarted, AppendCounters(), head_position=7)

    assert before.events_by_type == after.events_by_type == {
        "BreakerTransitioned": 6,
        "ConfigApplied": 1,
    }
    assert before.transitions == after.transitions
    assert after.transitions[("checkout", "payments", "closed", "open")] == 2
    assert after.projection_position == 7
    assert [b.state for b in after.breakers] == ["closed"]  # CLOSED->OPEN->HALF->CLOSED x2
