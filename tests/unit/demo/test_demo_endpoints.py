"""The demo's orders replicas: their config, the sick replica's schedule, and how ejections
and returns become lines, from the event log when it has them, from admin polls otherwise,
each printed once."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from sidecar.config import parse_config
from sidecar.demo._config import ORDERS_OUTLIER, SICK_REPLICA, Ports, replica_name, sidecar_config
from sidecar.demo._endpoints_view import (
    EJECTED,
    RETURNED,
    EndpointLine,
    EndpointRow,
    EndpointWatch,
    endpoints_status,
)
from sidecar.demo._phases import (
    DEFAULT_REPLICA_SCHEDULE,
    REPLICA_BEHAVIOURS,
    parse_schedule,
    phase_at,
)
from sidecar.demo._view import Frame, PlainView, render
from sidecar.demo.upstream import ORDERS_METHOD, _Answers
from sidecar.v1 import admin_pb2, events_pb2

START = 1_700_000_000.0
"""The demo's start (UNIX seconds) in these tests."""
ADDRESSES = ("127.0.0.1:50061", "127.0.0.1:50062", "127.0.0.1:50063")
SICK = ADDRESSES[1]
PORTS = Ports(upstream=50051, listen=15001, admin=15000, metrics=9464, eventlog=7070,
              eventlog_metrics=9465)


# --- config and schedule ---------------------------------------------------------------------

def test_orders_is_three_endpoints_balanced_by_p2c_ewma_with_quick_ejections(
        tmp_path: Path) -> None:
    config = parse_config(yaml.safe_dump(sidecar_config(PORTS, tmp_path)))
    orders = config.upstreams["orders"]
    assert orders.static_endpoints == ADDRESSES
    assert orders.balancer == "p2c_ewma"
    assert any(ORDERS_METHOD.startswith(route) for route in orders.routes)
    outlier = orders.outlier_detection.to_settings()
    assert 3000 <= outlier.base_ejection_ms <= 5000  # ejection and return inside a 60 s run
    assert outlier.max_ejection_percent >= 100 / 3  # one of three may be ejected
    # the breaker stays out of it: more failures in a row than one replica gives before ejection
    assert orders.breaker.consecutive_failures > outlier.consecutive_failures  # type: ignore[operator]
    assert {"payments", "inventory"} <= set(config.upstreams)
    assert replica_name(SICK_REPLICA) == "orders-2"


def test_the_default_sick_spell_fits_two_ejections_and_a_return_for_good_in_60_s() -> None:
    (_, healthy), (_, sick), (_, healed) = DEFAULT_REPLICA_SCHEDULE
    base_s = ORDERS_OUTLIER["base_ejection_ms"] / 1000
    # out base, back while still sick, out 2 x base: back after the sickness, before 60 s
    assert base_s < sick < base_s + 2 * base_s
    assert healthy + base_s + 2 * base_s + 10 < healthy + sick + healed <= 60


def test_the_replica_schedule_has_its_own_names_and_flag_in_errors() -> None:
    assert parse_schedule("healthy=3,sick=6,healed=30", REPLICA_BEHAVIOURS) == (
        ("healthy", 3.0), ("sick", 6.0), ("healed", 30.0))
    with pytest.raises(ValueError, match="--orders-phases: 'outage=3': expected NAME=SECONDS"):
        parse_schedule("outage=3", REPLICA_BEHAVIOURS, "--orders-phases")
    assert phase_at(DEFAULT_REPLICA_SCHEDULE, 9.0, REPLICA_BEHAVIOURS).name == "sick"


def test_a_sick_orders_replica_fails_every_call_and_a_healthy_one_none() -> None:
    sick = _Answers((("sick", 10.0),), started_at=None, role="orders")
    healthy = _Answers((("healthy", 10.0),), started_at=None, role="orders")
    assert all(sick.decide(ORDERS_METHOD)[1] for _ in range(20))
    assert not any(healthy.decide(ORDERS_METHOD)[1] for _ in range(20))
    assert sick.methods == (ORDERS_METHOD,)


# --- the watch --------------------------------------------------------------------------------

class _Clock:
    def __init__(self) -> None:
        self.wall = START

    def __call__(self) -> float:
        return self.wall


def _watch(clock: _Clock, **kwargs: float) -> EndpointWatch:
    names = {address: f"orders-{i + 1}" for i, address in enumerate(ADDRESSES)}
    return EndpointWatch("orders", names, lambda e: "sick" if e >= 3 else "healthy",
                         lambda n: 4.0 * n, START, wall=clock, **kwargs)


def _poll(ejected: dict[str, tuple[float, int]] | None = None, calls: int = 0,
          ) -> admin_pb2.ListEndpointsResponse:
    """Every endpoint active but those in ``ejected`` (address -> (until, in a row))."""
    answer = admin_pb2.UpstreamEndpoints(upstream="orders", balancer="p2c_ewma")
    for address in ADDRESSES:
        until, in_a_row = (ejected or {}).get(address, (None, 0))
        info = answer.endpoints.add(
            address=address, ewma_ms=5.0, calls=calls, failures=0,
            state=admin_pb2.ENDPOINT_STATE_EJECTED if until else admin_pb2.ENDPOINT_STATE_ACTIVE,
            ejections_in_a_row=in_a_row)
        if until:
            info.ejected_until.FromNanoseconds(int(until * 1e9))
    return admin_pb2.ListEndpointsResponse(upstreams=[answer])


def _event(position: int, at: float, **payload: events_pb2.EndpointEjected
           | events_pb2.EndpointReturned | events_pb2.EndpointsChanged) -> events_pb2.Event:
    event = events_pb2.Event(global_position=position, trace_id="ab" * 16, **payload)
    event.occurred_at.FromNanoseconds(int(at * 1e9))
    return event


def _ejected_event(position: int, elapsed: float, in_a_row: int = 1) -> events_pb2.Event:
    return _event(position, START + elapsed, endpoint_ejected=events_pb2.EndpointEjected(
        upstream="orders", endpoint=SICK, ejection_ms=4000 * in_a_row,
        reason=events_pb2.EJECTION_REASON_CONSECUTIVE_FAILURES,
        ejections_in_a_row=in_a_row, consecutive_failures=5, failure_rate=1.0, calls=5))


def _returned_event(position: int, elapsed: float) -> events_pb2.Event:
    return _event(position, START + elapsed, endpoint_returned=events_pb2.EndpointReturned(
        upstream="orders", endpoint=SICK, ejected_for_ms=4000))


def _kinds(lines: list[EndpointLine]) -> list[tuple[str, str, bool]]:
    return [(line.kind, line.name, bool(line.position)) for line in lines]


def test_without_endpoint_events_in_the_log_admin_polls_give_each_ejection_and_return_once(
        ) -> None:
    clock = _Clock()
    watch = _watch(clock)
    watch.observe(_poll(), 1.0, monotonic_s=1.0)
    clock.wall = START + 3.2
    watch.observe(_poll({SICK: (START + 7.2, 1)}), 3.2, monotonic_s=3.2)
    assert watch.due(3.3) == []  # waiting a moment for the log
    # the ejection end moves by microseconds from poll to poll: not a new ejection
    watch.observe(_poll({SICK: (START + 7.2001, 1)}), 3.5, monotonic_s=3.5)
    (line,) = watch.due(3.8)
    assert (line.kind, line.name, line.out_s, line.ejections_in_a_row) == (EJECTED, "orders-2",
                                                                            4.0, 1)
    assert "orders-2 127.0.0.1:50062  active -> ejected" in line.text()
    assert "out 4.0s (1 in a row)  (seen in the admin API)" in line.text()
    # back and ejected again between two polls: its ejections in a row grew
    clock.wall = START + 7.5
    watch.observe(_poll({SICK: (START + 15.5, 2)}), 7.5, monotonic_s=7.5)
    clock.wall = START + 16.0
    watch.observe(_poll(), 16.0, monotonic_s=16.0)
    lines = watch.flush()
    assert _kinds(lines) == [(RETURNED, "orders-2", False), (EJECTED, "orders-2", False),
                             (RETURNED, "orders-2", False)]
    assert [line.out_s for line in lines] == [4.0, 8.0, 8.0]
    assert lines[0].elapsed_s == pytest.approx(7.2, abs=0.01)  # back when its time was up
    assert watch.counts(EJECTED) == {"orders-2": 2} and watch.counts(RETURNED) == {"orders-2": 2}


def test_the_log_s_event_wins_over_the_admin_poll_that_saw_the_change_first() -> None:
    clock = _Clock()
    watch = _watch(clock)
    watch.observe(_poll(), 1.0, monotonic_s=1.0)
    watch.from_log(_event(2, START + 1.0, endpoints_changed=events_pb2.EndpointsChanged(
        upstream="orders", added=list(ADDRESSES), count=3)))
    assert watch.log_has_endpoint_events
    watch.observe(_poll({SICK: (START + 7.2, 1)}), 3.3, monotonic_s=3.3)
    assert watch.due(4.0) == []  # the log has endpoint events: it waits longer for them
    line = watch.from_log(_ejected_event(5, 3.2))
    assert line is not None and line.position == 5
    assert ("reason=consecutive_failures failed 5 in a row, failure=1.00 of 5 calls  "
            "out 4.0s (1 in a row)  (log #5 trace abababababababab)") in line.text()
    assert watch.due(10.0) == []  # nothing left from the admin API
    # the log may also come first: the admin poll then adds nothing
    returned = watch.from_log(_returned_event(6, 7.2))
    assert returned is not None and "ejected -> active  after 4.0s out  (log #6" in returned.text()
    watch.observe(_poll(), 7.4, monotonic_s=7.4)
    assert watch.flush() == []
    assert _kinds(watch.lines) == [(EJECTED, "orders-2", True), (RETURNED, "orders-2", True)]


def test_a_log_event_later_than_the_wait_is_not_printed_a_second_time() -> None:
    clock = _Clock()
    watch = _watch(clock)
    watch.observe(_poll(), 1.0, monotonic_s=1.0)
    watch.observe(_poll({SICK: (START + 7.2, 1)}), 3.2, monotonic_s=3.2)
    (line,) = watch.due(5.0)
    assert not line.position
    assert watch.from_log(_ejected_event(5, 3.2)) is None
    assert len(watch.lines) == 1


def test_events_of_other_upstreams_and_of_earlier_runs_are_left_alone() -> None:
    watch = _watch(_Clock())
    other = _ejected_event(3, 3.0)
    other.endpoint_ejected.upstream = "payments"
    assert watch.from_log(other) is None
    assert watch.from_log(_ejected_event(4, -3600.0)) is None  # a kept --data folder
    assert not watch.log_has_endpoint_events and watch.lines == []


def test_rows_show_each_replica_s_share_of_calls_and_when_an_ejected_one_is_back() -> None:
    clock = _Clock()
    watch = _watch(clock)
    watch.observe(_poll(calls=0), 0.0, monotonic_s=0.0)
    response = _poll({SICK: (START + 3.0, 1)}, calls=10)
    response.upstreams[0].endpoints[1].calls = 0
    rows = watch.observe(response, 1.0, monotonic_s=1.0)
    assert [(r.name, r.state, r.calls_per_s, r.share) for r in rows] == [
        ("orders-1", "active", 10.0, 0.5), ("orders-2", "ejected", 0.0, 0.0),
        ("orders-3", "active", 10.0, 0.5)]
    assert rows[1].back_in_s == pytest.approx(3.0) and rows[1].ejections_in_a_row == 1
    assert endpoints_status(rows) == ("orders 2/3 active (orders-2 ejected, back in 3.0s) "
                                      "calls orders-1 50% orders-2 0% orders-3 50%")


# --- the views --------------------------------------------------------------------------------

def _rows() -> list[EndpointRow]:
    return [EndpointRow("orders", ADDRESSES[0], "orders-1", "active", 15.0, 0.5, 0.0, 6.0, 0, 0,
                        None),
            EndpointRow("orders", SICK, "orders-2", "ejected", 0.0, 0.0, 0.0, 30.0, 0, 2, 5.3),
            EndpointRow("orders", ADDRESSES[2], "orders-3", "active", 15.0, 0.5, 0.0, 5.0, 1, 0,
                        None)]


def _line() -> EndpointLine:
    return EndpointLine(EJECTED, 12.8, "sick", "orders", SICK, "orders-2",
                        reason="consecutive_failures", out_s=8.0, ejections_in_a_row=2,
                        consecutive_failures=5, failure_rate=1.0, calls=5, position=9)


def _frame(elapsed_s: float) -> Frame:
    phase = phase_at(DEFAULT_REPLICA_SCHEDULE, elapsed_s, REPLICA_BEHAVIOURS)
    return Frame(elapsed_s, 60.0, phase_at((("brownout", 20.0),), elapsed_s), [], {}, {}, 9,
                 (_line(),), _rows(), phase)


def test_the_plain_view_prints_orders_phases_ejections_and_the_replicas_in_its_status() -> None:
    out = io.StringIO()
    view = PlainView(out)
    view.orders_phase(phase_at(DEFAULT_REPLICA_SCHEDULE, 8.0, REPLICA_BEHAVIOURS), 8.0)
    view.endpoint(_line())
    view.frame(_frame(12.9))
    first, second, status = out.getvalue().splitlines()
    assert first.endswith("orders phase sick: one replica answers UNAVAILABLE to every call "
                          "(for 11s)")
    assert re.search(r"orders\s+orders-2 127\.0\.0\.1:50062\s+active -> ejected", second)
    assert "orders 2/3 active (orders-2 ejected, back in 5.3s)" in status


def test_the_live_view_shows_each_replica_with_its_state_share_ewma_and_ejections() -> None:
    console = Console(file=io.StringIO(), width=200, record=True)
    console.print(render(_frame(12.9)))
    text = console.export_text()
    assert "orders replicas (p2c_ewma, outlier ejection) - phase sick" in text
    assert re.search(r"orders-2\s+│\s+127\.0\.0\.1:50062\s+│\s+ejected\s+│\s+0\.0\s+│\s+0%\s+│"
                     r"\s+-\s+│\s+30\.0\s+│\s+0\s+│\s+2\s+│\s+5\.3s", text), text
    assert re.search(r"orders-1\s+│\s+127\.0\.0\.1:50061\s+│\s+active\s+│\s+15\.0\s+│\s+50%", text)
    assert "orders-2 active -> ejected consecutive_failures, out 8.0s (2 in a row)  log #9" in text
