"""Event log metrics: computed at scrape time from projection state, under the contract names."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from sidecar.eventlog.metrics import (
    AppendCounters,
    BreakerState,
    EventLogCollector,
    MetricsSnapshot,
    take_snapshot,
)
from sidecar.eventlog.port import EventStore
from sidecar.eventlog.projections.follower import ProjectionFollower, server_projections
from sidecar.eventlog.projections.runner import rebuild
from sidecar.eventlog.sqlite.store import SqliteEventStore
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
        recoveries={("checkout", "payments"): (4, 50.0), ("checkout", "stock"): (0, 0.0)},
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
    assert value("eventlog_breaker_recoveries_total", **pair) == 4
    assert value("eventlog_breaker_recovery_seconds_total", **pair) == 50.0
    assert value("eventlog_breaker_mean_time_to_recover_seconds", **pair) == 12.5
    never_recovered = {"service": "checkout", "upstream": "stock"}
    assert value("eventlog_breaker_recoveries_total", **never_recovered) == 0
    assert value("eventlog_breaker_mean_time_to_recover_seconds", **never_recovered) is None
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


async def test_mean_time_to_recover_is_scraped_from_the_recovery_projection_per_upstream(
    store: EventStore,
) -> None:
    t0 = DEFAULT_START_NS
    pod1 = StreamFactory("checkout", "pod-1", start_ns=t0)
    pod2 = StreamFactory("checkout", "pod-2", start_ns=t0)
    await store.append([
        pod1.config_applied(["payments", "stock"], at_ns=t0),
        # pod-1 recovers after 30 s, a probe failing on the way (one incident, not two)
        pod1.transition("payments", "CLOSED", "OPEN", at_ns=t0 + 10 * S),
        pod1.transition("payments", "OPEN", "HALF_OPEN", at_ns=t0 + 15 * S),
        pod1.transition("payments", "HALF_OPEN", "OPEN", at_ns=t0 + 16 * S),
        pod1.transition("payments", "OPEN", "HALF_OPEN", at_ns=t0 + 35 * S),
        pod1.transition("payments", "HALF_OPEN", "CLOSED", at_ns=t0 + 40 * S),
        # ... and is OPEN again, not recovered yet: no sample for this incident
        pod1.transition("payments", "CLOSED", "OPEN", at_ns=t0 + 50 * S),
        pod1.transition("stock", "CLOSED", "OPEN", at_ns=t0 + 60 * S),
    ])
    await store.append([
        pod2.config_applied(["payments"], at_ns=t0),
        pod2.transition("payments", "CLOSED", "OPEN", at_ns=t0 + 20 * S),
        pod2.transition("payments", "OPEN", "HALF_OPEN", at_ns=t0 + 25 * S),
        pod2.transition("payments", "HALF_OPEN", "CLOSED", at_ns=t0 + 30 * S),
    ])
    follower = ProjectionFollower(store)
    await follower.load()
    while await follower.step():
        pass
    registry = registry_for(take_snapshot(follower, AppendCounters(), head_position=12))

    def value(name: str, upstream: str) -> float | None:
        return registry.get_sample_value(name, {"service": "checkout", "upstream": upstream})

    # pod-1: 30 s, pod-2: 10 s -> two recoveries, 40 s, mean 20 s
    assert value("eventlog_breaker_recoveries_total", "payments") == 2
    assert value("eventlog_breaker_recovery_seconds_total", "payments") == 40.0
    assert value("eventlog_breaker_mean_time_to_recover_seconds", "payments") == 20.0
    assert value("eventlog_breaker_recoveries_total", "stock") == 0
    assert value("eventlog_breaker_mean_time_to_recover_seconds", "stock") is None


async def test_recovery_metrics_keep_a_removed_breakers_history_and_survive_a_rebuild(
    store: EventStore,
) -> None:
    t0 = DEFAULT_START_NS
    pod = StreamFactory("checkout", "pod-1", start_ns=t0)
    await store.append([
        pod.config_applied(["payments"], at_ns=t0),
        pod.transition("payments", "CLOSED", "OPEN", at_ns=t0 + 1 * S),
        pod.transition("payments", "OPEN", "HALF_OPEN", at_ns=t0 + 4 * S),
        pod.transition("payments", "HALF_OPEN", "CLOSED", at_ns=t0 + 5 * S),
        pod.config_applied(["stock"], at_ns=t0 + 6 * S),  # payments removed from the config
    ])
    follower = ProjectionFollower(store)
    await follower.load()
    await follower.step()
    await follower.save()
    before = take_snapshot(follower, AppendCounters(), head_position=5)

    await rebuild(store, server_projections())
    restarted = ProjectionFollower(store)
    await restarted.load()
    await restarted.step()
    after = take_snapshot(restarted, AppendCounters(), head_position=5)

    assert before.recoveries == after.recoveries
    assert after.recoveries[("checkout", "payments")] == (1, 4.0)
    assert after.recoveries[("checkout", "stock")] == (0, 0.0)


def test_collector_reports_endpoint_and_unknown_value_families() -> None:
    registry = registry_for(MetricsSnapshot(
        endpoint_ejections={("checkout", "payments"): 3, ("checkout", "stock"): 0},
        endpoints_ejected={("checkout", "payments"): 1, ("checkout", "stock"): 0},
        unknown_values={"breaker_transitioned.to_state": 2, "endpoint_ejected.reason": 0},
    ))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    pair = {"service": "checkout", "upstream": "payments"}
    idle = {"service": "checkout", "upstream": "stock"}
    assert value("eventlog_endpoint_ejections_total", **pair) == 3
    assert value("eventlog_endpoint_ejections_total", **idle) == 0
    assert value("eventlog_endpoints_ejected", **pair) == 1
    assert value("eventlog_endpoints_ejected", **idle) == 0
    assert value("eventlog_unknown_values_total", field="breaker_transitioned.to_state") == 2
    assert value("eventlog_unknown_values_total", field="endpoint_ejected.reason") == 0


async def test_endpoint_and_unknown_value_metrics_come_from_the_log_across_a_rebuild(
    store: EventStore,
) -> None:
    from tests.contract.endpoint_events import (
        ENDPOINT_A,
        ENDPOINT_B,
        endpoint_ejected,
        endpoint_returned,
        endpoints_changed,
    )

    pod = StreamFactory("checkout", "pod-1")
    await store.append([
        pod.config_applied(["payments", "stock"]),
        endpoints_changed(pod, "payments", added=[ENDPOINT_A, ENDPOINT_B]),
        endpoint_ejected(pod, "payments", ENDPOINT_A),
        endpoint_returned(pod, "payments", ENDPOINT_A),
        endpoint_ejected(pod, "payments", ENDPOINT_B),
    ])
    follower = ProjectionFollower(store)
    await follower.load()
    await follower.step()
    before = take_snapshot(follower, AppendCounters(), head_position=5)
    await rebuild(store, server_projections())
    restarted = ProjectionFollower(store)
    await restarted.load()
    await restarted.step()
    after = take_snapshot(restarted, AppendCounters(), head_position=5)

    assert before.endpoint_ejections == after.endpoint_ejections == {
        ("checkout", "payments"): 2, ("checkout", "stock"): 0}
    assert before.endpoints_ejected == after.endpoints_ejected == {
        ("checkout", "payments"): 1, ("checkout", "stock"): 0}
    assert after.unknown_values == dict.fromkeys(after.unknown_values, 0)
    assert "breaker_transitioned.to_state" in after.unknown_values
    assert after.events_by_type["EndpointEjected"] == 2
