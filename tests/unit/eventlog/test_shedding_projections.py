"""The shedding projection: LoadShedding periods, shed calls and time spent shedding per
(service, upstream), the instances shedding now, kept across restart and rebuild; its
eventlog_* metrics; and the event's row in ``sidecar events`` tables."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from sidecar.eventlog.client import TABLE_HEADER, table_row
from sidecar.eventlog.metrics import AppendCounters, EventLogCollector, take_snapshot
from sidecar.eventlog.port import EventStore, NewEvent
from sidecar.eventlog.projections.follower import ProjectionFollower, server_projections
from sidecar.eventlog.projections.runner import ProjectionRunner, rebuild
from sidecar.eventlog.projections.shedding import (
    SheddingPeriodsProjection,
    SheddingTotals,
    SheddingViews,
)
from sidecar.eventlog.sqlite.store import SqliteEventStore
from tests.contract.resilience_events import load_shedding
from tests.support.events import StreamFactory, to_proto

PAIR = ("checkout", "catalog")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    store = SqliteEventStore(tmp_path / "events.db")
    yield store
    await store.close()


async def views_of(store: EventStore, *batches: list[NewEvent]) -> SheddingViews:
    for batch in batches:
        await store.append(batch)
    runner = ProjectionRunner(store, [SheddingPeriodsProjection()])
    await runner.catch_up()
    return SheddingViews(runner.state(SheddingPeriodsProjection.name))


def period(pod: StreamFactory, shed: int, duration_ms: int) -> list[NewEvent]:
    return [load_shedding(pod, "catalog", phase="started", shed=1),
            load_shedding(pod, "catalog", phase="stopped", shed=shed, duration_ms=duration_ms)]


async def test_periods_add_up_and_only_an_open_period_is_shedding_now(store: EventStore) -> None:
    pod1, pod2 = StreamFactory("checkout", "pod-1"), StreamFactory("checkout", "pod-2")
    views = await views_of(
        store,
        [*period(pod1, 420, 3_000), *period(pod1, 80, 500)],
        [load_shedding(pod2, "catalog", phase="started", shed=1)],  # still shedding
    )

    assert views.totals() == {PAIR: SheddingTotals(periods=3, shed=500, shedding_s=3.5,
                                                   shedding_now=1)}
    await store.append([load_shedding(pod2, "catalog", phase="stopped", shed=7,
                                      duration_ms=250)])
    assert (await views_of(store)).totals()[PAIR] == SheddingTotals(3, 507, 3.75, 0)


async def test_configured_upstreams_start_at_zero_and_a_restart_stops_shedding(
    store: EventStore,
) -> None:
    pod = StreamFactory("checkout", "pod-1")
    configured = await views_of(store, [pod.config_applied(["catalog", "stock"])])
    assert configured.shedding_now() == {PAIR: 0, ("checkout", "stock"): 0}
    assert configured.totals()[("checkout", "stock")] == SheddingTotals(0, 0, 0.0, 0)

    await store.append([load_shedding(pod, "catalog", phase="started"),
                        load_shedding(pod, "stock", phase="started")])
    assert (await views_of(store)).shedding_now() == {PAIR: 1, ("checkout", "stock"): 1}
    await store.append([pod.config_applied(["catalog"], source="reload")])  # stock is gone
    assert (await views_of(store)).shedding_now() == {PAIR: 1, ("checkout", "stock"): 0}
    await store.append([pod.config_applied(["catalog"], source="start")])  # the pod restarted
    restarted = await views_of(store)
    assert restarted.shedding_now() == {PAIR: 0, ("checkout", "stock"): 0}
    assert restarted.totals()[PAIR].periods == 1  # a counter never goes down


async def test_metrics_come_from_the_log_and_survive_a_rebuild(store: EventStore) -> None:
    pod = StreamFactory("checkout", "pod-1")
    await store.append([pod.config_applied(["catalog", "stock"]), *period(pod, 42, 1_500),
                        load_shedding(pod, "catalog", phase="started")])
    follower = ProjectionFollower(store)
    await follower.load()
    await follower.step()
    before = take_snapshot(follower, AppendCounters(), head_position=4)
    await rebuild(store, server_projections())
    restarted = ProjectionFollower(store)
    await restarted.load()
    await restarted.step()
    after = take_snapshot(restarted, AppendCounters(), head_position=4)
    assert before.shedding == after.shedding

    registry = CollectorRegistry()
    registry.register(EventLogCollector(lambda: after))

    def value(name: str, upstream: str = "catalog") -> float | None:
        return registry.get_sample_value(name, {"service": "checkout", "upstream": upstream})

    assert value("eventlog_shedding_periods_total") == 2
    assert value("eventlog_shed_calls_total") == 42
    assert value("eventlog_shedding_seconds_total") == 1.5
    assert value("eventlog_instances_shedding") == 1
    assert value("eventlog_shedding_periods_total", "stock") == 0
    assert value("eventlog_instances_shedding", "stock") == 0


def test_shedding_events_have_readable_table_rows() -> None:
    pod = StreamFactory("checkout", "pod-1")

    def detail(event: NewEvent) -> str:
        row = table_row(to_proto(event))
        assert row.split()[4] == "LoadShedding"
        return row[TABLE_HEADER.index("DETAIL"):]

    assert detail(load_shedding(pod, "catalog", limit=12, in_flight=12, shed=1)) == (
        "catalog: shedding started (gradient2 limit 12, 12 in flight, 1 shed)")
    assert detail(load_shedding(pod, "catalog", phase="stopped", limit=9, in_flight=3, shed=420,
                                algorithm="vegas", duration_ms=3_000)) == (
        "catalog: shedding stopped after 3000 ms (420 shed; vegas limit 9, 3 in flight)")
