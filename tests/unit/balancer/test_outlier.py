"""Outlier ejection on a fake clock (Envoy's model): rules, ejection time, decay, return, limits."""

from __future__ import annotations

import contextvars
import logging

import pytest

from sidecar.balancer import Balancer, BalancerSettings, Ejection, EndpointListener
from tests.unit.balancer._support import (
    WALL_OFFSET,
    FakeClock,
    Recorder,
    by_address,
    call,
    fail,
    make_balancer,
)

A, B, C = "10.0.0.1:50051", "10.0.0.2:50051", "10.0.0.3:50051"
BASE_S = 30.0  # OutlierSettings().base_ejection_ms / 1000


# --- consecutive failures --------------------------------------------------------------------


def test_five_failures_in_a_row_eject_the_endpoint_and_listeners_hear_the_numbers() -> None:
    balancer, clock, recorder = make_balancer(3)
    a = by_address(balancer, A)
    fail(balancer, a, 4)
    assert recorder.ejections == []
    fail(balancer, a, 1)
    assert recorder.ejections == [
        Ejection(
            upstream="payments", endpoint=A, reason="consecutive_failures", ejection_s=BASE_S,
            ejections_in_a_row=1, consecutive_failures=5, failure_rate=1.0, calls=5,
            at_wall=clock.now + WALL_OFFSET,
        )
    ]
    assert a.ejected and balancer.ejected_count() == 1 and balancer.active_count() == 2
    assert balancer.ejections_total == 1


def test_a_success_resets_the_run_of_failures() -> None:
    balancer, _, recorder = make_balancer(3)
    a = by_address(balancer, A)
    for _ in range(10):
        fail(balancer, a, 4)
        call(balancer, a)
    assert recorder.ejections == []


def test_an_ejected_endpoint_is_never_picked() -> None:
    balancer, _, _ = make_balancer(3, seed=1)
    a = by_address(balancer, A)
    fail(balancer, a, 5)
    assert a not in {balancer.pick() for _ in range(500)}
    assert a not in {balancer.pick(avoid=balancer.endpoints()[1:]) for _ in range(50)}


def test_the_ejection_is_decided_in_the_finishing_calls_context() -> None:
    current_call: contextvars.ContextVar[str] = contextvars.ContextVar("current_call")
    seen: list[str] = []

    class Tracing(EndpointListener):
        def on_ejected(self, ejection: Ejection) -> None:
            seen.append(current_call.get())

    balancer, _, _ = make_balancer(3)
    balancer.add_listener(Tracing())
    a = by_address(balancer, A)
    fail(balancer, a, 4)
    token = current_call.set("call-5")
    try:
        fail(balancer, a, 1)
    finally:
        current_call.reset(token)
    assert seen == ["call-5"]


def test_consecutive_failures_none_turns_the_rule_off() -> None:
    balancer, _, recorder = make_balancer(3, consecutive_failures=None)
    fail(balancer, by_address(balancer, A), 100)
    assert recorder.ejections == []


def test_with_outlier_detection_disabled_nothing_is_ever_ejected() -> None:
    balancer, _, recorder = make_balancer(3, enabled=False, failure_rate=0.1, minimum_calls=1)
    for endpoint in balancer.endpoints():
        fail(balancer, endpoint, 50)
    assert recorder.ejections == [] and balancer.ejected_count() == 0


# --- failure rate ----------------------------------------------------------------------------


def test_the_failure_rate_ejects_once_the_interval_holds_minimum_calls() -> None:
    balancer, _, recorder = make_balancer(
        3, consecutive_failures=None, failure_rate=0.5, minimum_calls=10
    )
    a = by_address(balancer, A)
    for _ in range(4):
        call(balancer, a, failed=True)
        call(balancer, a)
    call(balancer, a, failed=True)
    assert recorder.ejections == []  # 5 of 9: not judged below minimum_calls
    call(balancer, a)
    (ejection,) = recorder.ejections
    assert (ejection.reason, ejection.calls, ejection.failure_rate) == ("failure_rate", 10, 0.5)
    assert ejection.consecutive_failures == 0  # the numbers the decision was based on


def test_failure_rate_counts_start_over_each_interval() -> None:
    balancer, clock, recorder = make_balancer(
        3, consecutive_failures=None, failure_rate=0.5, minimum_calls=10, interval_ms=10_000.0
    )
    a = by_address(balancer, A)
    for _ in range(10):  # 9 calls in each interval, all failing: never minimum_calls at once
        fail(balancer, a, 9)
        clock.advance(10.0)
    assert recorder.ejections == []
    clock.advance(3.0)
    fail(balancer, a, 10)
    assert [e.calls for e in recorder.ejections] == [10]


def test_failure_rate_below_the_threshold_never_ejects() -> None:
    balancer, _, recorder = make_balancer(
        3, consecutive_failures=None, failure_rate=0.5, minimum_calls=10
    )
    a = by_address(balancer, A)
    for _ in range(100):
        call(balancer, a, failed=True)
        call(balancer, a)
        call(balancer, a)
    assert recorder.ejections == []


# --- ejection time: growth, cap, decay in time ------------------------------------------------


def eject_and_return(
    balancer: Balancer[str], clock: FakeClock, recorder: Recorder, address: str
) -> Ejection:
    """Eject ``address`` by consecutive failures, then let exactly its ejection time pass."""
    fail(balancer, by_address(balancer, address), 5)
    ejection = recorder.ejections[-1]
    clock.advance(ejection.ejection_s)
    balancer.pick()  # notices the return
    return ejection


def test_ejection_time_grows_with_ejections_in_a_row_up_to_the_cap() -> None:
    balancer, clock, recorder = make_balancer(
        3, base_ejection_ms=30_000.0, max_ejection_ms=100_000.0
    )
    for _ in range(5):
        eject_and_return(balancer, clock, recorder, A)
    assert [e.ejection_s for e in recorder.ejections] == [30.0, 60.0, 90.0, 100.0, 100.0]
    assert [e.ejections_in_a_row for e in recorder.ejections] == [1, 2, 3, 4, 5]


def test_ejections_in_a_row_fall_by_one_per_interval_back_in_service() -> None:
    balancer, clock, recorder = make_balancer(3, interval_ms=10_000.0)
    for _ in range(3):
        eject_and_return(balancer, clock, recorder, A)

    def in_a_row() -> int:
        (view,) = [v for v in balancer.views() if v.address == A]
        return view.ejections_in_a_row

    assert in_a_row() == 3
    clock.advance(9.999)
    assert in_a_row() == 3
    clock.advance(0.001)
    assert in_a_row() == 2
    clock.advance(10.0)
    assert in_a_row() == 1
    fail(balancer, by_address(balancer, A), 5)
    assert recorder.ejections[-1].ejections_in_a_row == 2
    assert recorder.ejections[-1].ejection_s == 2 * BASE_S


def test_a_healed_endpoint_is_trusted_fully_again_after_enough_intervals() -> None:
    balancer, clock, recorder = make_balancer(3, interval_ms=10_000.0)
    for _ in range(4):
        eject_and_return(balancer, clock, recorder, A)
    clock.advance(1000.0)
    fail(balancer, by_address(balancer, A), 5)
    assert recorder.ejections[-1].ejections_in_a_row == 1


def test_time_spent_ejected_does_not_decay_the_count() -> None:
    balancer, clock, recorder = make_balancer(3, interval_ms=1000.0)
    eject_and_return(balancer, clock, recorder, A)  # 30 s out = 30 intervals, all ejected
    fail(balancer, by_address(balancer, A), 5)
    assert recorder.ejections[-1].ejections_in_a_row == 2


# --- return ----------------------------------------------------------------------------------


def test_an_ejected_endpoint_returns_when_its_time_is_up_and_not_before() -> None:
    balancer, clock, recorder = make_balancer(3)
    a = by_address(balancer, A)
    fail(balancer, a, 5)
    clock.advance(BASE_S - 0.001)
    balancer.pick()
    assert a.ejected and recorder.returns == []
    clock.advance(0.001)
    balancer.pick()
    assert not a.ejected
    (returned,) = recorder.returns
    assert (returned.endpoint, returned.ejected_for_s) == (A, BASE_S)
    assert returned.at_wall == clock.now + WALL_OFFSET
    b, c = by_address(balancer, B), by_address(balancer, C)
    assert balancer.pick(avoid=[b, c]) is a  # pickable again


def test_a_return_noticed_late_reports_the_scheduled_ejection_time() -> None:
    balancer, clock, recorder = make_balancer(3)
    fail(balancer, by_address(balancer, A), 5)
    clock.advance(500.0)
    assert balancer.active_count() == 3
    assert recorder.returns[0].ejected_for_s == BASE_S


def test_a_returned_endpoint_starts_over_with_a_fair_chance() -> None:
    balancer, clock, recorder = make_balancer(
        3, settings=BalancerSettings(default_rtt_ms=30.0), failure_rate=0.5, minimum_calls=6
    )
    a = by_address(balancer, A)
    call(balancer, a, latency_s=2.0, clock=clock)  # a slow call: estimate 2000 ms
    fail(balancer, a, 5)
    clock.advance(BASE_S)
    balancer.pick()
    (view,) = [v for v in balancer.views() if v.address == A]
    assert view.ewma_ms == 30.0 and not view.ejected
    fail(balancer, a, 4)  # consecutive count and interval counts started over
    call(balancer, a)
    assert len(recorder.ejections) == 1


def test_calls_in_flight_to_an_ejected_endpoint_still_finish_without_ejecting_it_again() -> None:
    balancer, clock, recorder = make_balancer(3)
    a = by_address(balancer, A)
    started = [balancer.start(a) for _ in range(3)]
    fail(balancer, a, 5)
    for at in started:
        balancer.finish(a, at, failed=True)
    assert len(recorder.ejections) == 1 and a.in_flight == 0
    (view,) = [v for v in balancer.views() if v.address == A]
    assert (view.calls, view.failures) == (8, 8)
    clock.advance(BASE_S)
    assert balancer.active_count() == 3


def test_views_show_when_an_ejection_ends() -> None:
    balancer, clock, _ = make_balancer(3)
    fail(balancer, by_address(balancer, A), 5)
    clock.advance(10.0)
    views = {v.address: v for v in balancer.views()}
    assert views[A].ejected and views[A].ejected_until_wall == pytest.approx(
        clock.now + WALL_OFFSET + 20.0
    )
    assert views[A].ejections_in_a_row == 1
    assert views[B].ejected_until_wall is None and not views[B].ejected


# --- max_ejection_percent --------------------------------------------------------------------


def test_no_more_than_max_ejection_percent_are_ejected_and_refusals_are_counted() -> None:
    balancer, clock, recorder = make_balancer(4, max_ejection_percent=50.0)
    a, b, c, d = balancer.endpoints()
    fail(balancer, a, 5)
    fail(balancer, b, 5)
    fail(balancer, c, 5)
    assert [e.endpoint for e in recorder.ejections] == [a.address, b.address]
    assert not c.ejected and balancer.ejections_refused == 1
    fail(balancer, c, 2)  # its counts keep going: each failure asks again
    assert balancer.ejections_refused == 3
    clock.advance(BASE_S)
    fail(balancer, c, 1)  # a and b are back: now c may go
    assert recorder.ejections[-1].endpoint == c.address
    assert recorder.ejections[-1].consecutive_failures == 8
    assert d.in_set and not d.ejected


def test_the_last_active_endpoint_is_never_ejected_even_at_one_hundred_percent() -> None:
    balancer, _, recorder = make_balancer(2, max_ejection_percent=100.0)
    a, b = balancer.endpoints()
    fail(balancer, a, 5)
    fail(balancer, b, 50)
    assert [e.endpoint for e in recorder.ejections] == [a.address]
    assert balancer.pick() is b


def test_a_single_endpoint_is_never_ejected() -> None:
    balancer, _, recorder = make_balancer(1, max_ejection_percent=100.0)
    fail(balancer, by_address(balancer, A), 50)
    assert recorder.ejections == [] and balancer.pick() is not None


def test_zero_percent_ejects_nothing() -> None:
    balancer, _, recorder = make_balancer(10, max_ejection_percent=0.0)
    fail(balancer, by_address(balancer, A), 10)
    assert recorder.ejections == [] and balancer.ejections_refused == 6


def test_the_limit_rounds_down() -> None:
    balancer, _, recorder = make_balancer(3, max_ejection_percent=50.0)  # 1.5 -> 1
    for endpoint in balancer.endpoints():
        fail(balancer, endpoint, 5)
    assert len(recorder.ejections) == 1


# --- listeners -------------------------------------------------------------------------------


def test_a_failing_listener_is_logged_and_never_fails_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(EndpointListener):
        def on_ejected(self, ejection: Ejection) -> None:
            raise RuntimeError("exporter down")

    balancer, _, recorder = make_balancer(3)
    balancer.add_listener(Broken())
    with caplog.at_level(logging.ERROR, logger="sidecar.balancer"):
        fail(balancer, by_address(balancer, A), 5)
    assert len(recorder.ejections) == 1
    assert "listener" in caplog.text and "exporter down" in caplog.text
    assert caplog.records[0].name == "sidecar.balancer"
