"""The demo's retries and shedding: catalog's load schedule and capacity, the config that
retries orders and limits catalog, how retries and limits read from the admin API, the line
that tells retries masked the sick replica, the shedding lines (from the log, else the admin
API, each once), the summary, and how the views show them."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from rich.console import Console

from sidecar.config import parse_config
from sidecar.demo._config import ORDERS_RETRY, Ports, sidecar_config
from sidecar.demo._load import Target, classify
from sidecar.demo._log import LogFollower
from sidecar.demo._phases import (
    CATALOG_CAPACITY,
    CATALOG_LOADS,
    DEFAULT_CATALOG_SCHEDULE,
    DEFAULT_REPLICA_SCHEDULE,
    load_at,
    parse_schedule,
    phase_at,
)
from sidecar.demo._resilience_view import (
    MaskLine,
    MaskWatch,
    ResilienceRow,
    ResilienceWatch,
    resilience_status,
)
from sidecar.demo._shedding_view import STARTED, STOPPED, SheddingLine, SheddingWatch
from sidecar.demo._stories import Stories
from sidecar.demo._view import Frame, PlainView, render
from sidecar.demo.upstream import CATALOG_METHOD, ORDERS_METHOD, ROLES
from sidecar.v1 import admin_pb2, events_pb2

START = 1_700_000_000.0
PORTS = Ports(upstream=50051, listen=15001, admin=15000, metrics=9464, eventlog=7070,
              eventlog_metrics=9465)


# --- catalog's load and capacity ---------------------------------------------------------------

def test_the_catalog_surge_offers_about_three_times_its_capacity_and_normal_well_under() -> None:
    capacity = CATALOG_CAPACITY.calls_per_s
    assert 150 <= capacity <= 200  # ~160/s: the demo stays light on 2 cores
    assert CATALOG_LOADS["normal"].calls_per_s < capacity / 2
    assert 2.5 * capacity <= CATALOG_LOADS["surge"].calls_per_s <= 3.5 * capacity
    assert CATALOG_METHOD in ROLES["shop"][1]  # served by the shop sample upstream


def test_the_default_surge_comes_after_the_sick_spell_and_fits_in_60_s() -> None:
    surge = [load_at(DEFAULT_CATALOG_SCHEDULE, t).name for t in range(60)]
    first, last = surge.index("surge"), len(surge) - 1 - surge[::-1].index("surge")
    assert 8 <= last - first + 1 <= 12
    (_, healthy), (_, sick), _ = DEFAULT_REPLICA_SCHEDULE
    assert first >= healthy + sick and last < 55  # room to stop shedding before the end
    assert sum(seconds for _, seconds in DEFAULT_CATALOG_SCHEDULE) <= 60


def test_the_catalog_schedule_has_its_names_repeats_and_names_its_flag_in_errors() -> None:
    schedule = parse_schedule("normal=2,surge=3", CATALOG_LOADS, "--catalog-phases")
    assert schedule == (("normal", 2.0), ("surge", 3.0))
    at = load_at(schedule, 6.5)
    assert (at.name, at.started_s, at.ends_s, at.cycle) == ("normal", 5.0, 7.0, 1)
    assert at.load is CATALOG_LOADS["normal"]
    with pytest.raises(ValueError, match="--catalog-phases: 'sick=3': expected NAME=SECONDS"):
        parse_schedule("sick=3", CATALOG_LOADS, "--catalog-phases")


def test_a_target_s_rate_follows_its_schedule() -> None:
    schedule = (("normal", 2.0), ("surge", 3.0))
    target = Target("catalog", CATALOG_METHOD, 50.0,
                    rate_of=lambda e: load_at(schedule, e).load.calls_per_s)
    assert [target.rate_at(t) for t in (0.0, 2.5, 5.1)] == [50.0, 480.0, 50.0]
    assert Target("orders", ORDERS_METHOD, 30.0).rate_at(99.0) == 30.0
    assert Target("x", "/x/", 1.0, rate_of=lambda e: -5.0).rate_at(0.0) == 0.0


@pytest.mark.parametrize(("code", "trailing", "outcome"), [
    (grpc.StatusCode.RESOURCE_EXHAUSTED, {"x-sidecar-overflow": "true"}, "overflow"),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, {}, "failed"),  # the upstream's own, not a shed
    (grpc.StatusCode.OK, {"grpc-previous-rpc-attempts": "1"}, "ok"),  # retried, then served
])
def test_a_shed_call_is_told_from_an_upstream_s_resource_exhausted(
        code: grpc.StatusCode, trailing: dict[str, str], outcome: str) -> None:
    assert classify(code, trailing) == outcome


# --- the config ---------------------------------------------------------------------------------

def test_orders_retries_its_methods_and_catalog_has_a_gradient2_limit(tmp_path: Path) -> None:
    raw = sidecar_config(PORTS, tmp_path)
    config = parse_config(yaml.safe_dump(raw))
    orders = config.upstreams["orders"]
    assert orders.retry is not None and orders.retry.max_attempts == 3
    policy = orders.resilience_policies().retry
    assert policy is not None and policy.enabled
    assert any(ORDERS_METHOD.startswith(prefix) for prefix in policy.methods)
    assert "UNAVAILABLE" in policy.retryable_codes
    assert ORDERS_RETRY["budget"]["ratio"] <= 0.2  # a whole-orders outage: no retry storm
    catalog = config.upstreams["catalog"]
    assert any(CATALOG_METHOD.startswith(route) for route in catalog.routes)
    limit = catalog.adaptive_concurrency
    assert limit is not None and limit.algorithm == "gradient2"
    assert limit.min_limit <= CATALOG_CAPACITY.concurrency < limit.initial_limit
    assert config.upstreams["payments"].retry is None  # payments' outage is for the breaker


# --- the admin API's retries and limits ---------------------------------------------------------

def _breakers(retries: int, shed: int, shedding: bool = False) -> admin_pb2.ListBreakersResponse:
    reply = admin_pb2.ListBreakersResponse()
    reply.breakers.add(name="payments", upstream="payments",
                       concurrency=admin_pb2.ConcurrencyLimit(algorithm="fixed", limit=1000))
    reply.breakers.add(name="orders", upstream="orders", retry_budget=admin_pb2.RetryBudgetInfo(
        ratio=0.2, min_per_s=10, available=14.6, retries=retries, exhausted=1))
    reply.breakers.add(name="catalog", upstream="catalog", concurrency=admin_pb2.ConcurrencyLimit(
        algorithm="gradient2", limit=6, in_flight=5, shed=shed, shedding=shedding))
    return reply


def test_rows_come_only_for_upstreams_that_retry_or_have_an_adaptive_limit() -> None:
    watch = ResilienceWatch()
    watch.observe(_breakers(retries=10, shed=0), 1.0)
    catalog, orders = watch.observe(_breakers(retries=16, shed=600, shedding=True), 3.0)
    assert (orders.upstream, orders.retries, orders.retries_per_s, orders.budget_exhausted) == (
        "orders", 16, 3.0, 1)
    assert not orders.adaptive and catalog.adaptive and catalog.retries is None
    assert (catalog.limit, catalog.in_flight, catalog.shed, catalog.shed_per_s) == (6, 5, 600,
                                                                                     300.0)
    assert resilience_status([orders, catalog]) == (
        "orders retries 3/s (budget 15 left) | catalog limit 6 (gradient2) in flight 5 "
        "shed 300/s SHEDDING")


# --- retries masking the sick replica -----------------------------------------------------------

def test_the_mask_line_counts_the_sick_spell_from_the_frame_before_it() -> None:
    mask = MaskWatch("orders", "orders-2", report_after_s=1.5)
    assert mask.observe(7.8, "healthy", 0, 2, 1, 20.0) == []
    assert mask.observe(8.1, "sick", 5, 7, 1, 15.0) == []  # the spell starts
    assert mask.observe(9.0, "sick", 9, 11, 1, 12.0) == []  # too soon to tell
    (line,) = mask.observe(9.7, "sick", 12, 14, 1, 12.3)
    assert (line.replica_failures, line.retries, line.callers_failed, line.over) == (
        12, 12, 0, False)
    assert line.text() == ("   9.7s  [    sick]  orders     12 failures of orders-2 retried on "
                           "another replica; callers saw 0 failures  (12 retries, budget 12 "
                           "left)")
    assert mask.observe(15.0, "sick", 20, 22, 1, 11.0) == []  # once per spell
    (over,) = mask.observe(19.1, "healed", 37, 39, 2, 20.0)
    assert over.over and (over.replica_failures, over.retries, over.callers_failed) == (37, 37, 1)
    assert over.text().startswith("  19.1s  [  healed]  orders     sick spell over: 37 failures")
    assert mask.observe(20.0, "healed", 37, 39, 2, 20.0) == []


def test_without_retries_the_mask_line_says_the_failures_reached_the_callers() -> None:
    mask = MaskWatch("orders", "orders-2", report_after_s=1.0)
    mask.observe(0.0, "sick", 0, 0, 0, None)
    (line,) = mask.observe(1.0, "sick", 8, 0, 8, None)
    assert "8 failures of orders-2, none retried; callers saw 8 failures  (0 retries)" in (
        line.text())


# --- shedding started and stopped ----------------------------------------------------------------

def _shedding_event(position: int, elapsed: float, phase: str, shed: int = 0,
                    duration_ms: int = 0) -> events_pb2.Event:
    event = events_pb2.Event(global_position=position, trace_id="cd" * 16,
                             load_shedding=events_pb2.LoadShedding(
                                 service="demo-shop", instance="demo-shop-1", upstream="catalog",
                                 phase=phase, limit=6, in_flight=6, shed=shed,
                                 algorithm="gradient2", duration_ms=duration_ms))
    event.occurred_at.FromNanoseconds(int((START + elapsed) * 1e9))
    return event


def _shedding_watch() -> SheddingWatch:
    return SheddingWatch(lambda e: "surge" if 28 <= e < 38 else "normal", START, hold_s=2.5)


def _row(shedding: bool, shed: int) -> ResilienceRow:
    return ResilienceRow("catalog", algorithm="gradient2", limit=6, in_flight=6, shed=shed,
                         shedding=shedding)


def test_shedding_lines_come_from_the_log_and_make_the_periods() -> None:
    watch = _shedding_watch()
    started = watch.from_log(_shedding_event(40, 28.6, STARTED))
    assert started is not None and started.text() == (
        "  28.6s  [   surge]  catalog    shedding started: limit 6 (gradient2), 6 in flight; "
        "calls over it refused at once  (log #40 trace cdcdcdcdcdcdcdcd)")
    watch.observe([_row(True, 10)], 28.8)  # the admin API agrees: nothing more to print
    stopped = watch.from_log(_shedding_event(41, 38.4, STOPPED, shed=3120, duration_ms=9800))
    assert stopped is not None
    assert "shedding stopped after 9.8s: 3120 calls shed, limit 6 (gradient2)" in stopped.text()
    watch.observe([_row(False, 3130)], 38.6)
    assert watch.flush() == []
    (period,) = watch.periods()
    assert (period.started_s, period.stopped_s, period.shed) == (pytest.approx(28.6),
                                                                 pytest.approx(38.4), 3120)


def test_without_the_event_the_admin_api_gives_each_change_once_and_a_late_event_nothing(
        ) -> None:
    watch = _shedding_watch()
    watch.observe([_row(False, 0)], 27.0)
    watch.observe([_row(True, 5)], 28.5)
    assert watch.due(29.0) == []  # waiting for the log
    (line,) = watch.due(31.0)
    assert line.kind == STARTED and "(seen in the admin API)" in line.text()
    assert watch.from_log(_shedding_event(40, 28.4, STARTED)) is None  # late: not twice
    watch.observe([_row(False, 2905)], 38.5)
    (stopped,) = watch.flush()
    assert (stopped.kind, stopped.shed, stopped.duration_s) == (STOPPED, 2900, 10.0)
    assert [(p.started_s, p.stopped_s) for p in watch.periods()] == [(28.5, 38.5)]


def test_shedding_events_of_an_earlier_run_and_other_payloads_are_left_alone() -> None:
    watch = _shedding_watch()
    assert watch.from_log(_shedding_event(3, -600.0, STARTED)) is None
    other = events_pb2.Event(endpoints_changed=events_pb2.EndpointsChanged(upstream="orders"))
    assert watch.from_log(other) is None and watch.lines == []


class _Notes:
    """Records what a LogFollower hands the view."""

    def __init__(self) -> None:
        self.notes: list[Any] = []

    def note(self, line: Any) -> None:
        self.notes.append(line)

    def transition(self, line: Any) -> None:
        self.notes.append(line)

    def endpoint(self, line: Any) -> None:
        self.notes.append(line)


def test_the_log_follower_hands_shedding_events_to_the_view_and_counts_them() -> None:
    from sidecar.demo._endpoints_view import EndpointWatch

    view = _Notes()
    watch = EndpointWatch("orders", {}, lambda e: "", lambda n: 4.0, START)
    follower = LogFollower("127.0.0.1:1", "demo-shop", view, watch,  # type: ignore[arg-type]
                           lambda e: "recovery", START, shedding=_shedding_watch())
    follower.handle(_shedding_event(7, 29.0, STARTED))
    (line,) = view.notes
    assert isinstance(line, SheddingLine) and line.phase == "surge"
    assert follower.tally.events_by_upstream == {"catalog": 1}
    assert follower.tally.last_position == 7


# --- the summary and the views ------------------------------------------------------------------

def test_the_summary_tells_retries_callers_failures_shed_calls_and_the_periods() -> None:
    stories = Stories("127.0.0.1:50062", "orders-2", lambda e: "surge", START)
    stories.breakers(_breakers(retries=52, shed=3120), 1.0)
    stories.shedding.from_log(_shedding_event(40, 28.6, STARTED))
    stories.shedding.from_log(_shedding_event(41, 38.4, STOPPED, shed=3100, duration_ms=9800))
    totals = {"orders": {"ok": 1800, "failed": 0}, "catalog": {"ok": 4000, "overflow": 3120}}
    orders, catalog = stories.summary(totals)
    assert orders == ("  orders     retried 52 calls (budget refused 1); callers' failures 0 "
                      "of 1800 calls")
    assert catalog == ("  catalog    shed 3120 calls (callers saw 3120 overflow) in 1 shedding "
                       "period: 28.6s-38.4s (3100 shed); limit now 6 (gradient2)")


def test_stories_count_the_sick_replica_s_failures_from_list_endpoints() -> None:
    stories = Stories("127.0.0.1:50062", "orders-2", lambda e: "normal", START)
    stories.mask = MaskWatch("orders", "orders-2", report_after_s=1.0)
    answer = admin_pb2.UpstreamEndpoints(upstream="orders")
    sick = answer.endpoints.add(address="127.0.0.1:50062", calls=10, failures=0)
    answer.endpoints.add(address="127.0.0.1:50061", calls=10, failures=3)
    stories.breakers(_breakers(retries=0, shed=0), 0.0)
    stories.endpoints(admin_pb2.ListEndpointsResponse(upstreams=[answer]))
    assert stories.frame(0.0, "sick", {"orders": {"failed": 0}}) == []
    sick.failures = 9
    stories.endpoints(admin_pb2.ListEndpointsResponse(upstreams=[answer]))
    stories.breakers(_breakers(retries=9, shed=0), 1.0)
    (line,) = stories.frame(1.0, "sick", {"orders": {"failed": 0}})
    assert isinstance(line, MaskLine) and (line.replica_failures, line.retries) == (9, 9)


def _frame(rows: list[ResilienceRow]) -> Frame:
    return Frame(30.0, 60.0, phase_at((("recovery", 60.0),), 30.0), [], {}, {}, 3, (),
                 resilience=rows, catalog_load=load_at(DEFAULT_CATALOG_SCHEDULE, 30.0))


def test_the_views_show_retries_budget_limit_in_flight_and_shed_rate() -> None:
    rows = [ResilienceRow("catalog", algorithm="gradient2", limit=6, in_flight=5, shed=900,
                          shed_per_s=310.0, shedding=True),
            ResilienceRow("orders", retries=37, retries_per_s=4.0, budget_available=14.0)]
    console = Console(file=io.StringIO(), width=200, record=True)
    console.print(render(_frame(rows)))
    text = console.export_text()
    assert "retries (budget) and adaptive limits - catalog load surge: 480 calls/s" in text
    assert re.search(r"catalog\s+│\s+-\s+│\s+-\s+│\s+-\s+│\s+-\s+│\s+6 \(gradient2\)\s+│\s+5\s+│"
                     r"\s+310\s+│\s+900\s+│\s+yes", text), text
    assert re.search(r"orders\s+│\s+4\.0\s+│\s+37\s+│\s+14\s+│\s+0\s+│\s+-", text), text
    out = io.StringIO()
    view = PlainView(out)
    view.note(MaskLine(9.7, "sick", "orders", "orders-2", 12, 12, 0, 12.0))
    view.frame(_frame(rows))
    note, status = out.getvalue().splitlines()
    assert "12 failures of orders-2 retried on another replica; callers saw 0 failures" in note
    assert "orders retries 4/s (budget 14 left)" in status
    assert "catalog limit 6 (gradient2) in flight 5 shed 310/s SHEDDING" in status
