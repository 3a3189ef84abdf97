"""The endpoint projection: ejections and endpoints ejected now, per (service, upstream), kept
across restart and rebuild like the breaker projections; and stored enum values the proto does
not define, which every projection folds as UNKNOWN(n) instead of failing."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sidecar.eventlog.port import EventStore, NewEvent
from sidecar.eventlog.projections.endpoints import (
    EjectedEndpoint,
    EndpointEjectionsProjection,
    EndpointViews,
)
from sidecar.eventlog.projections.follower import (
    ProjectionFollower,
    UnknownValuesProjection,
    server_projections,
)
from sidecar.eventlog.projections.runner import ProjectionRunner, rebuild
from sidecar.eventlog.sqlite.store import SqliteEventStore
from tests.contract.endpoint_events import (
    ENDPOINT_A,
    ENDPOINT_B,
    ENDPOINT_C,
    endpoint_ejected,
    endpoint_events,
    endpoint_returned,
    endpoints_changed,
    unknown_enum_log,
    with_enum_values,
)
from tests.support.events import StreamFactory

PAIR = ("checkout", "payments")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    store = SqliteEventStore(tmp_path / "events.db")
    yield store
    await store.close()


async def views_of(store: EventStore, *batches: list[NewEvent]) -> EndpointViews:
    for batch in batches:
        await store.append(batch)
    runner = ProjectionRunner(store, [EndpointEjectionsProjection()])
    await runner.catch_up()
    return EndpointViews(runner.state(EndpointEjectionsProjection.name))


async def test_ejections_count_and_returns_take_the_endpoint_back(store: EventStore) -> None:
    pod = StreamFactory("checkout", "pod-1")
    views = await views_of(store, [
        endpoints_changed(pod, added=[ENDPOINT_A, ENDPOINT_B, ENDPOINT_C]),
        endpoint_ejected(pod, endpoint=ENDPOINT_A),
        endpoint_ejected(pod, endpoint=ENDPOINT_B),
        endpoint_returned(pod, endpoint=ENDPOINT_A),
    ])

    assert views.ejection_totals() == {PAIR: 2}
    assert views.ejected_now() == {PAIR: 1}
    assert views.ejected() == [EjectedEndpoint("checkout", "pod-1", "payments", ENDPOINT_B)]


async def test_instances_add_up_per_service_and_upstream(store: EventStore) -> None:
    pod1, pod2 = StreamFactory("checkout", "pod-1"), StreamFactory("checkout", "pod-2")
    cart = StreamFactory("cart", "pod-1")
    views = await views_of(
        store,
        [endpoint_ejected(pod1, endpoint=ENDPOINT_A), endpoint_ejected(pod1, "stock")],
        [endpoint_ejected(pod2, endpoint=ENDPOINT_A)],  # its own balancer: counts again
        [endpoint_ejected(cart, endpoint=ENDPOINT_A), endpoint_returned(cart)],
    )

    assert views.ejection_totals() == {
        ("cart", "payments"): 1, PAIR: 2, ("checkout", "stock"): 1}
    assert views.ejected_now() == {("cart", "payments"): 0, PAIR: 2, ("checkout", "stock"): 1}
    assert [e.instance for e in views.ejected(service="checkout", upstream="payments")] == [
        "pod-1", "pod-2"]


async def test_ejected_again_while_out_counts_but_is_one_endpoint_ejected(
    store: EventStore,
) -> None:
    pod = StreamFactory("checkout", "pod-1")
    views = await views_of(store, [
        endpoint_ejected(pod), endpoint_ejected(pod, ejections_in_a_row=2),  # a lost return
        endpoint_returned(pod, endpoint=ENDPOINT_C),  # never ejected: nothing to take back
    ])

    assert views.ejection_totals() == {PAIR: 2}
    assert views.ejected_now() == {PAIR: 1}


async def test_an_endpoint_removed_from_the_set_is_no_longer_ejected(store: EventStore) -> None:
    pod = StreamFactory("checkout", "pod-1")
    views = await views_of(store, [
        endpoints_changed(pod, added=[ENDPOINT_A, ENDPOINT_B]),
        endpoint_ejected(pod, endpoint=ENDPOINT_A),
        endpoint_ejected(pod, endpoint=ENDPOINT_B),
        endpoints_changed(pod, added=[ENDPOINT_C], removed=[ENDPOINT_A], count=2, source="dns"),
    ])

    assert views.ejected() == [EjectedEndpoint("checkout", "pod-1", "payments", ENDPOINT_B)]
    assert views.ejection_totals() == {PAIR: 2}  # a counter never goes down


async def test_configured_upstreams_start_at_zero_and_a_restart_returns_everything(
    store: EventStore,
) -> None:
    pod = StreamFactory("checkout", "pod-1")
    configured = await views_of(store, [pod.config_applied(["payments", "stock"])])
    assert configured.ejection_totals() == {PAIR: 0, ("checkout", "stock"): 0}
    assert configured.ejected_now() == {PAIR: 0, ("checkout", "stock"): 0}

    await store.append([
        endpoint_ejected(pod), endpoint_ejected(pod, "stock"),
        pod.config_applied(["payments"], source="reload"),  # stock is gone: nothing ejected
    ])
    reloaded = await views_of(store)
    assert reloaded.ejected_now() == {PAIR: 1, ("checkout", "stock"): 0}

    await store.append([pod.config_applied(["payments"], source="start")])
    restarted = await views_of(store)
    assert restarted.ejected_now() == {PAIR: 0, ("checkout", "stock"): 0}
    assert restarted.ejection_totals() == {PAIR: 1, ("checkout", "stock"): 1}


async def test_the_projection_resumes_from_its_checkpoint_and_rebuilds_to_the_same_state(
    store: EventStore,
) -> None:
    pod = StreamFactory("checkout", "pod-1")
    await store.append([*endpoint_events(pod), *pod.transitions(7)])
    first = ProjectionRunner(store, server_projections(), snapshot_every_events=5)
    await first.catch_up()  # checkpoints at 10, events 11 folded and not saved
    await store.append([endpoint_ejected(pod, endpoint=ENDPOINT_C), endpoint_returned(pod)])

    resumed = ProjectionRunner(store, server_projections(), snapshot_every_events=5)
    await resumed.load()
    assert resumed.positions()[EndpointEjectionsProjection.name] == 10
    await resumed.catch_up()
    rebuilt = await rebuild(store, server_projections())

    assert resumed.dump() == rebuilt.dump()
    views = EndpointViews(resumed.state(EndpointEjectionsProjection.name))
    assert views.ejection_totals() == {PAIR: 3}
    assert views.ejected_now() == {PAIR: 2}  # B (failure rate) and C


async def test_a_log_from_before_the_endpoint_projection_is_folded_for_it_from_the_start(
    store: EventStore,
) -> None:
    pod = StreamFactory("checkout", "pod-1")
    await store.append([*endpoint_events(pod), *pod.transitions(3)])
    older = [p for p in server_projections() if p.name != EndpointEjectionsProjection.name]
    await rebuild(store, older)  # checkpoints of a build that had no endpoint projection

    runner = ProjectionRunner(store, server_projections())
    await runner.load()
    assert runner.position == 0
    await runner.catch_up()

    assert EndpointViews(runner.state(EndpointEjectionsProjection.name)).ejection_totals() == {
        PAIR: 2}


# --- stored enum values the proto does not define ---------------------------------------------


async def test_unknown_enum_values_fold_as_unknown_and_are_counted_per_field(
    store: EventStore,
) -> None:
    pod = StreamFactory("checkout", "pod-1")
    await store.append(unknown_enum_log(pod))
    follower = ProjectionFollower(store)
    await follower.load()
    await follower.step()

    (status,) = follower.views().instances(now_ns=pod.now_ns)
    assert (status.state, status.mode) == ("HALF_OPEN", "UNKNOWN(-7)")
    assert status.transition_counts == (("CLOSED", "UNKNOWN(99)", 1),
                                        ("UNKNOWN(99)", "HALF_OPEN", 1))
    assert follower.endpoint_views().ejection_totals() == {PAIR: 1}
    assert follower.unknown_values() == {
        "breaker_mode_changed.from_mode": 0,
        "breaker_mode_changed.to_mode": 1,
        "breaker_transitioned.from_state": 1,
        "breaker_transitioned.mode": 1,
        "breaker_transitioned.to_state": 1,
        "endpoint_ejected.reason": 1,
    }


async def test_a_breaker_in_an_unknown_state_shows_it(store: EventStore) -> None:
    pod = StreamFactory("checkout", "pod-1")
    event = with_enum_values(pod.transition("payments", "CLOSED", "OPEN"), to_state=99, mode=42)
    await store.append([event])
    runner = ProjectionRunner(store)
    await runner.catch_up()

    (status,) = runner.views().instances(now_ns=pod.now_ns)
    (upstream,) = runner.views().upstreams(now_ns=pod.now_ns)

    assert (status.state, status.mode) == ("UNKNOWN(99)", "UNKNOWN(42)")
    assert (upstream.state, upstream.instances_open) == ("CLOSED", 0)


async def test_unknown_value_counts_survive_restart_and_rebuild(store: EventStore) -> None:
    pod = StreamFactory("checkout", "pod-1")
    await store.append(unknown_enum_log(pod))
    first = ProjectionFollower(store)
    await first.load()
    await first.step()
    await first.save()
    await rebuild(store, server_projections())

    again = ProjectionFollower(store)
    await again.load()
    await again.step()

    assert again.unknown_values() == first.unknown_values()
    assert sum(again.unknown_values().values()) == 5
    saved = await store.load_checkpoint(UnknownValuesProjection.name)
    assert saved is not None and saved[0] == 5


def test_entries_round_trip_through_a_checkpoint() -> None:
    projection = EndpointEjectionsProjection()
    state = {("checkout", "pod-1", "payments"): projection.entry_type(3, [ENDPOINT_A])}

    loaded = projection.load(projection.dump(state))

    assert {k: dataclasses.asdict(v) for k, v in loaded.items()} == {
        ("checkout", "pod-1", "payments"): {"ejections": 3, "ejected": [ENDPOINT_A]}}
