"""The endpoint set: updates keep what they can, report what changed; reloads keep state."""

from __future__ import annotations

import pytest

from sidecar.balancer import BalancerSettings, EndpointsChange, OutlierSettings
from tests.unit.balancer._support import (
    WALL_OFFSET,
    addresses,
    by_address,
    call,
    fail,
    make_balancer,
)

A, B, C, D = "10.0.0.1:50051", "10.0.0.2:50051", "10.0.0.3:50051", "10.0.0.4:50051"
BASE_S = 30.0


def test_the_first_set_is_reported_as_added_from_empty_with_its_source() -> None:
    balancer, clock, recorder = make_balancer(0)
    added, removed = balancer.update_endpoints(addresses(3), "dns")
    assert [e.address for e in added] == [A, B, C] and removed == []
    assert [e.target for e in added] == ["conn-1", "conn-2", "conn-3"]
    assert recorder.changes == [
        EndpointsChange(
            upstream="payments", added=(A, B, C), removed=(), count=3, source="dns",
            at_wall=clock.now + WALL_OFFSET,
        )
    ]


def test_a_first_set_that_is_empty_is_still_reported_once() -> None:
    balancer, _, recorder = make_balancer(0)
    assert balancer.update_endpoints({}, "file") == ([], [])
    assert [(c.added, c.count, c.source) for c in recorder.changes] == [((), 0, "file")]
    balancer.update_endpoints({}, "file")
    assert len(recorder.changes) == 1


def test_the_same_set_again_changes_nothing_and_is_not_reported() -> None:
    balancer, _, recorder = make_balancer(3)
    before = balancer.endpoints()
    assert balancer.update_endpoints(addresses(3), "dns") == ([], [])
    assert balancer.endpoints() == before
    assert len(recorder.changes) == 1


def test_an_update_reports_added_and_removed_endpoints_sorted() -> None:
    balancer, _, recorder = make_balancer(3)
    old_b = by_address(balancer, B)
    added, removed = balancer.update_endpoints({D: "d", A: "a", C: "c"}, "endpoints")
    assert [e.address for e in added] == [D]
    assert removed == [old_b] and not old_b.in_set
    change = recorder.changes[-1]
    assert (change.added, change.removed, change.count) == ((D,), (B,), 3)
    assert [e.address for e in balancer.endpoints()] == [A, C, D]


def test_kept_addresses_keep_their_endpoint_stats_and_ejection() -> None:
    balancer, clock, _ = make_balancer(3)
    a, c = by_address(balancer, A), by_address(balancer, C)
    call(balancer, a, latency_s=0.250, clock=clock)
    fail(balancer, c, 5)
    balancer.start(a)
    balancer.update_endpoints({A: "new-a", C: "new-c", D: "d"}, "dns")
    assert by_address(balancer, A) is a and by_address(balancer, C) is c
    assert a.target == "conn-1"  # the caller's object for a kept endpoint is not replaced
    assert a.in_flight == 1 and a.load.estimate_ms == pytest.approx(250.0)
    assert c.ejected and balancer.ejected_count() == 1
    views = {v.address: v for v in balancer.views()}
    assert (views[A].calls, views[C].failures, views[C].ejections_in_a_row) == (1, 5, 1)


def test_removed_endpoints_are_never_picked_again() -> None:
    balancer, _, _ = make_balancer(3, seed=3)
    _, removed = balancer.update_endpoints({A: "a"}, "dns")
    assert {e.address for e in removed} == {B, C}
    assert {balancer.pick() for _ in range(100)} == {by_address(balancer, A)}


def test_late_outcomes_of_a_removed_endpoint_only_settle_its_calls_in_flight() -> None:
    balancer, _, recorder = make_balancer(3)
    b = by_address(balancer, B)
    started = [balancer.start(b) for _ in range(7)]
    balancer.update_endpoints({A: "a", C: "c"}, "dns")
    for at in started[:6]:
        balancer.finish(b, at, failed=True)
    balancer.cancel(b)
    balancer.cancel(b)  # one more than started: still harmless
    balancer.finish(b, started[6], failed=True)
    assert b.in_flight == 0 and b.calls == 0
    assert recorder.ejections == [] and balancer.ejected_count() == 0
    assert [v.address for v in balancer.views()] == [A, C]


def test_an_address_removed_and_added_again_starts_as_a_new_endpoint() -> None:
    balancer, _, _ = make_balancer(3)
    old_a = by_address(balancer, A)
    fail(balancer, old_a, 5)
    balancer.update_endpoints({B: "b", C: "c"}, "dns")
    (new_a,), _ = balancer.update_endpoints({A: "a2", B: "b", C: "c"}, "dns")
    assert new_a is not old_a and not new_a.ejected and new_a.target == "a2"
    assert balancer.ejected_count() == 0


def test_removing_an_ejected_endpoint_drops_it_from_the_ejected_count() -> None:
    balancer, clock, recorder = make_balancer(3)
    fail(balancer, by_address(balancer, A), 5)
    balancer.update_endpoints({B: "b", C: "c"}, "dns")
    assert balancer.ejected_count() == 0 and balancer.active_count() == 2
    clock.advance(BASE_S)
    balancer.pick()
    assert recorder.returns == []  # a removed endpoint does not "return"


def test_when_the_set_shrinks_ejected_endpoints_due_soonest_come_back_to_keep_the_limit() -> None:
    balancer, clock, recorder = make_balancer(4, max_ejection_percent=50.0)
    a, b, _, _ = balancer.endpoints()
    fail(balancer, a, 5)
    clock.advance(1.0)
    fail(balancer, b, 5)
    clock.advance(2.0)
    balancer.update_endpoints({A: "a", B: "b"}, "dns")  # 2 left, both ejected: limit is 1
    assert not a.ejected and b.ejected
    assert balancer.active_count() == 1 and balancer.pick() is a
    assert [(r.endpoint, r.ejected_for_s) for r in recorder.returns] == [(A, 3.0)]
    assert recorder.order[-2:] == ["changed", f"returned {A}"]


def test_reconfigure_keeps_estimates_counts_and_ejections() -> None:
    balancer, clock, recorder = make_balancer(3)
    a, b = by_address(balancer, A), by_address(balancer, B)
    call(balancer, a, latency_s=0.080, clock=clock)
    fail(balancer, b, 5)
    fail(balancer, a, 3)
    balancer.reconfigure(
        BalancerSettings(policy="round_robin"), OutlierSettings(base_ejection_ms=1000.0)
    )
    assert balancer.settings.policy == "round_robin"
    assert balancer.outlier.base_ejection_ms == 1000.0
    assert a.load.estimate_ms == pytest.approx(80.0) and b.ejected
    assert recorder.returns == []
    balancer.update_endpoints(addresses(5), "dns")  # room for a second ejection
    fail(balancer, a, 2)  # 3 + 2: the run of failures survived the reload
    assert recorder.ejections[-1].endpoint == A
    assert recorder.ejections[-1].ejection_s == 1.0  # the new base applies to new ejections
    clock.advance(1.0)
    assert balancer.active_count() == 4  # a is back after its 1 s ...
    assert b.ejected  # ... while b keeps the 30 s it was given


def test_a_reload_with_a_lower_percent_returns_the_excess_at_once() -> None:
    balancer, _, recorder = make_balancer(4, max_ejection_percent=50.0)
    a, b, _, _ = balancer.endpoints()
    fail(balancer, a, 5)
    fail(balancer, b, 5)
    balancer.reconfigure(BalancerSettings(), OutlierSettings(max_ejection_percent=25.0))
    assert balancer.ejected_count() == 1 and len(recorder.returns) == 1


def test_a_reload_that_disables_outlier_detection_returns_every_ejected_endpoint() -> None:
    balancer, _, recorder = make_balancer(4, max_ejection_percent=50.0)
    a, b, _, _ = balancer.endpoints()
    fail(balancer, a, 5)
    fail(balancer, b, 5)
    balancer.reconfigure(BalancerSettings(), OutlierSettings(enabled=False))
    assert balancer.ejected_count() == 0
    assert {r.endpoint for r in recorder.returns} == {A, B}
    fail(balancer, a, 50)
    assert len(recorder.ejections) == 2
