"""Breaker projections: each fold's answers, and the runner's checkpoints, snapshots and lag."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sidecar.eventlog.port import EventStore, NewEvent
from sidecar.eventlog.projections.breaker_views import BreakerViews
from sidecar.eventlog.projections.breakers import (
    BreakerStatusProjection,
    default_projections,
)
from sidecar.eventlog.projections.runner import ProjectionRunner, rebuild
from sidecar.eventlog.sqlite.store import SqliteEventStore
from tests.support.events import DEFAULT_START_NS, StreamFactory

S = 1_000_000_000  # one second in nanoseconds
T0 = DEFAULT_START_NS


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    store = SqliteEventStore(tmp_path / "events.db")
    yield store
    await store.close()


async def fold(store: EventStore, *batches: list[NewEvent]) -> BreakerViews:
    for batch in batches:
        await store.append(batch)
    runner = ProjectionRunner(store)
    await runner.catch_up()
    return runner.views()


async def test_status_follows_the_latest_transition_of_each_instance_and_upstream(
    store: EventStore,
) -> None:
    pod1, pod2 = StreamFactory("checkout", "pod-1"), StreamFactory("checkout", "pod-2")
    views = await fold(
        store,
        [
            pod1.transition("payments", "CLOSED", "OPEN", at_ns=T0 + 1 * S),
            pod1.transition("payments", "OPEN", "HALF_OPEN", at_ns=T0 + 3 * S),
            pod1.transition("stock", "CLOSED", "OPEN", at_ns=T0 + 4 * S),
        ],
        [pod2.transition("payments", "CLOSED", "OPEN", at_ns=T0 + 2 * S)],
    )

    status = {(s.instance, s.upstream): s for s in views.instances(now_ns=T0 + 10 * S)}

    assert status[("pod-1", "payments")].state == "HALF_OPEN"
    assert status[("pod-1", "payments")].since_ns == T0 + 3 * S
    assert status[("pod-1", "payments")].open_since_ns == 0
    assert status[("pod-1", "stock")].state == "OPEN"
    assert status[("pod-2", "payments")].open_since_ns == T0 + 2 * S


async def test_upstream_status_counts_instances_open_out_of_known(store: EventStore) -> None:
    pods = [StreamFactory("checkout", f"pod-{i}") for i in range(3)]
    views = await fold(
        store,
        [pods[0].config_applied(["payments"], at_ns=T0)],
        [pods[1].transition("payments", "CLOSED", "OPEN", at_ns=T0 + 5 * S)],
        [pods[2].transition("payments", "CLOSED", "OPEN", at_ns=T0 + 2 * S)],
    )

    (payments,) = views.upstreams(now_ns=T0 + 10 * S, service="checkout", upstream="payments")

    assert (payments.instances_open, payments.instances_known) == (2, 3)
    assert payments.state == "OPEN"
    assert payments.open_since_ns == T0 + 2 * S
    assert [i.instance for i in payments.instances] == ["pod-0", "pod-1", "pod-2"]


async def test_configured_upstreams_are_known_and_closed_before_any_transition(
    store: EventStore,
) -> None:
    pod = StreamFactory("checkout", "pod-1")
    views = await fold(store, [pod.config_applied(["payments", "stock"], at_ns=T0)])

    assert [(s.upstream, s.state) for s in views.instances(now_ns=T0)] == [
        ("payments", "CLOSED"),
        ("stock", "CLOSED"),
    ]


async def test_restarted_sidecar_resets_its_breakers_and_forgets_removed_upstreams(
    store: EventStore,
) -> None:
    pod = StreamFactory("checkout", "pod-1")
    views = await fold(
        store,
        [
            pod.config_applied(["payments", "stock"], at_ns=T0),
            pod.transition("payments", "CLOSED", "OPEN", at_ns=T0 + 1 * S),
            pod.config_applied(["payments"], source="start", at_ns=T0 + 4 * S),
        ],
    )
    now = T0 + 100 * S

    (payments,) = views.instances(now_ns=now)

    assert (payments.upstream, payments.state, payments.since_ns) == (
        "payments",
        "CLOSED",
        T0 + 4 * S,
    )
    assert payments.seconds_open == 3.0  # the open period ended with the restart
    assert payments.recoveries == 0  # a reset is not a recovery
    assert views.open_seconds_total(now) == {("checkout", "payments"): 3.0}  # stock forgotten


async def test_transitions_are_counted_by_service_upstream_from_and_to(
    store: EventStore,
) -> None:
    pod1, pod2 = StreamFactory("checkout", "pod-1"), StreamFactory("checkout", "pod-2")
    views = await fold(store, pod1.transitions(7, "payments"), pod2.transitions(2, "payments"))

    assert views.transition_totals() == {
        ("checkout", "payments", "CLOSED", "OPEN"): 4,
        ("checkout", "payments", "HALF_OPEN", "CLOSED"): 2,
        ("checkout", "payments", "OPEN", "HALF_OPEN"): 3,
    }
    (payments,) = views.upstreams(now_ns=T0)
    assert payments.transitions == 9


async def test_seconds_open_include_the_current_open_period_up_to_the_asked_time(
    store: EventStore,
) -> None:
    pod = StreamFactory("checkout", "pod-1")
    views = await fold(
        store,
        [
            pod.transition("payments", "CLOSED", "OPEN", at_ns=T0),
            pod.transition("payments", "OPEN", "HALF_OPEN", at_ns=T0 + 10 * S),
            pod.transition("payments", "HALF_OPEN", "OPEN", at_ns=T0 + 11 * S),
        ],
    )

    assert views.open_seconds_total(T0 + 11 * S) == {("checkout", "payments"): 10.0}
    assert views.open_seconds_total(T0 + 15 * S) == {("checkout", "payments"): 14.0}
    (payments,) = views.instances(now_ns=T0 + 20 * S)
    assert payments.seconds_open == 19.0


async def test_mean_time_to_recover_spans_open_to_closed_through_failed_probes(
    store: EventStore,
) -> None:
    pod = StreamFactory("checkout", "pod-1")
    views = await fold(
        store,
        [
            pod.transition("payments", "CLOSED", "OPEN", at_ns=T0),
            pod.transition("payments", "OPEN", "HALF_OPEN", at_ns=T0 + 5 * S),
            pod.transition("payments", "HALF_OPEN", "OPEN", at_ns=T0 + 6 * S),
            pod.transition("payments", "OPEN", "HALF_OPEN", at_ns=T0 + 16 * S),
            pod.transition("payments", "HALF_OPEN", "CLOSED", at_ns=T0 + 20 * S),  # 20 s
            pod.transition("payments", "CLOSED", "OPEN", at_ns=T0 + 30 * S),
            pod.transition("payments", "OPEN", "HALF_OPEN", at_ns=T0 + 33 * S),
            pod.transition("payments", "HALF_OPEN", "CLOSED", at_ns=T0 + 40 * S),  # 10 s
            pod.transition("payments", "CLOSED", "OPEN", at_ns=T0 + 50 * S),  # still open
        ],
    )

    (payments,) = views.upstreams(now_ns=T0 + 60 * S)

    assert payments.recoveries == 2
    assert payments.mean_time_to_recover_s == 15.0


async def test_mode_change_shows_in_the_status(store: EventStore) -> None:
    pod = StreamFactory("checkout", "pod-1")
    views = await fold(
        store,
        [
            pod.transition("payments", "CLOSED", "OPEN"),
            pod.mode_changed("payments", "enforce", "metrics_only"),
        ],
    )

    (payments,) = views.instances(now_ns=T0)
    assert (payments.state, payments.mode) == ("OPEN", "metrics_only")


# --- the runner ---------------------------------------------------------------------------


async def test_runner_snapshots_every_n_events_with_the_position(store: EventStore) -> None:
    await store.append(StreamFactory().transitions(25))
    runner = ProjectionRunner(store, snapshot_every_events=10, page_events=4)

    await runner.catch_up()

    saved = await store.load_checkpoint(BreakerStatusProjection.name)
    assert saved is not None and saved[0] == 20
    assert runner.position == 25


async def test_runner_resumes_from_its_checkpoint_without_counting_twice(
    store: EventStore,
) -> None:
    pod = StreamFactory()
    await store.append(pod.transitions(12))
    first = ProjectionRunner(store, snapshot_every_events=5)
    await first.catch_up()  # checkpoint at 10; events 11 and 12 folded but not saved
    await store.append(pod.transitions(6))

    resumed = ProjectionRunner(store, snapshot_every_events=5)
    await resumed.load()
    assert resumed.position == 10
    await resumed.catch_up()

    assert resumed.position == 18
    assert resumed.dump() == (await rebuild(store, save=False)).dump()


async def test_projections_saved_at_different_positions_each_resume_from_their_own(
    store: EventStore,
) -> None:
    await store.append(StreamFactory().transitions(9))
    early = await rebuild(store, save=False)
    await store.append(StreamFactory("checkout", "pod-2").transitions(4))
    late = await rebuild(store, save=True)  # all checkpoints at 13
    status = BreakerStatusProjection()
    await store.save_checkpoint(status.name, 9, early.dump()[status.name])  # crash before 10..13

    resumed = ProjectionRunner(store)
    await resumed.load()
    assert resumed.positions()[status.name] == 9 and resumed.position == 9
    await resumed.catch_up()

    assert resumed.dump() == late.dump()


async def test_lag_is_the_head_minus_the_folded_position(store: EventStore) -> None:
    pod = StreamFactory()
    await store.append(pod.transitions(8))
    runner = ProjectionRunner(store)

    assert await runner.lag() == 8
    await runner.catch_up(max_events=5)
    assert await runner.lag() == 3
    await runner.catch_up()
    assert await runner.lag() == 0


async def test_checkpoint_of_another_format_is_ignored_and_folded_again(
    store: EventStore,
) -> None:
    await store.append(StreamFactory().transitions(3))
    for projection in default_projections():
        await store.save_checkpoint(projection.name, 3, b'{"format": 0}')

    runner = ProjectionRunner(store)
    await runner.load()
    await runner.catch_up()

    assert runner.position == 3
    assert runner.dump() == (await rebuild(store, save=False)).dump()


async def test_rebuild_replaces_the_checkpoints_with_the_state_from_the_log(
    store: EventStore,
) -> None:
    await store.append(StreamFactory().transitions(6))
    await store.save_checkpoint(BreakerStatusProjection.name, 6, b"garbage")

    rebuilt = await rebuild(store)

    saved = await store.load_checkpoint(BreakerStatusProjection.name)
    assert saved == (6, rebuilt.dump()[BreakerStatusProjection.name])
