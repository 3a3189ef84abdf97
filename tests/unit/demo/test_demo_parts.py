"""The demo's pure parts: the upstream's schedule, how a host app's call outcome is read, the
configs the demo writes, and what its views print."""

from __future__ import annotations

import io
import re
from pathlib import Path

import grpc
import pytest
from rich.console import Console

from sidecar.config import parse_config
from sidecar.demo._load import TargetStats, classify
from sidecar.demo._phases import BEHAVIOURS, parse_schedule, phase_at
from sidecar.demo._system import INSTANCE, SERVICE, Ports, prometheus_config, sidecar_config
from sidecar.demo._view import BreakerRow, Frame, PlainView, TransitionLine, render
from sidecar.demo.upstream import INVENTORY_METHOD, PAYMENTS_METHOD

SCHEDULE = (("healthy", 2.0), ("brownout", 3.0), ("outage", 4.0), ("recovery", 5.0))
PORTS = Ports(upstream=50051, listen=15001, admin=15000, metrics=9464, eventlog=7070,
              eventlog_metrics=9465)


def test_schedule_parses_names_and_seconds() -> None:
    assert parse_schedule("healthy=2, brownout=3,outage=4,recovery=5") == SCHEDULE


@pytest.mark.parametrize(("text", "problem"), [
    ("healthy=2,meltdown=3", "'meltdown=3': expected NAME=SECONDS"),
    ("healthy", "'healthy': expected NAME=SECONDS"),
    ("healthy=soon", "'healthy=soon': SECONDS must be a number"),
    ("healthy=0", "'healthy=0': SECONDS must be > 0"),
])
def test_a_bad_schedule_is_refused_naming_the_part(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_schedule(text)


def test_phases_follow_the_schedule_and_repeat() -> None:
    assert phase_at(SCHEDULE, 0.0).name == "healthy"
    assert phase_at(SCHEDULE, 2.0).name == "brownout"
    at = phase_at(SCHEDULE, 6.5)
    assert (at.name, at.started_s, at.ends_s, at.cycle) == ("outage", 5.0, 9.0, 0)
    again = phase_at(SCHEDULE, 14.0 + 3.0)
    assert (again.name, again.started_s, again.cycle) == ("brownout", 16.0, 1)
    assert phase_at(SCHEDULE, -1.0).name == "healthy"


def test_the_outage_fails_every_call_and_the_brownout_is_slow_and_flaky() -> None:
    assert BEHAVIOURS["outage"].failure_ratio == 1.0
    brownout = BEHAVIOURS["brownout"]
    assert 0 < brownout.failure_ratio < 0.5 and brownout.latency_ms[0] > 100


@pytest.mark.parametrize(("code", "trailing", "outcome"), [
    (grpc.StatusCode.OK, {}, "ok"),
    (grpc.StatusCode.UNAVAILABLE, {"x-sidecar-breaker": "open"}, "rejected"),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, {"x-sidecar-overflow": "true"}, "overflow"),
    (grpc.StatusCode.UNAVAILABLE, {}, "failed"),
    (grpc.StatusCode.DEADLINE_EXCEEDED, {}, "failed"),
])
def test_a_host_app_tells_a_breaker_rejection_from_an_upstream_failure(
        code: grpc.StatusCode, trailing: dict[str, str], outcome: str) -> None:
    assert classify(code, trailing) == outcome


def test_the_demo_sidecar_config_is_valid_and_routes_both_upstreams(tmp_path: Path) -> None:
    import yaml

    config = parse_config(yaml.safe_dump(sidecar_config(PORTS, tmp_path)))
    assert (config.service, config.instance) == (SERVICE, INSTANCE)
    routes = {name: up.routes for name, up in config.upstreams.items()}
    assert any(PAYMENTS_METHOD.startswith(r) for r in routes["payments"])
    assert any(INVENTORY_METHOD.startswith(r) for r in routes["inventory"])
    assert config.eventlog is not None and config.eventlog.address == "127.0.0.1:7070"
    assert config.eventlog.outbox_path.startswith(str(tmp_path))


def test_the_demo_prometheus_config_labels_the_sidecar_like_the_dashboards_expect() -> None:
    jobs = {job["job_name"]: job for job in prometheus_config(PORTS)["scrape_configs"]}
    (sidecar,) = jobs["evergreen-sidecar"]["static_configs"]
    assert sidecar["targets"] == ["127.0.0.1:9464"]
    assert sidecar["labels"] == {"service": SERVICE, "instance": INSTANCE}
    assert jobs["evergreen-eventlog"]["honor_labels"] is True


def _line(**changes: object) -> TransitionLine:
    values: dict[str, object] = dict(
        elapsed_s=4.1, phase="brownout", upstream="payments", from_state="CLOSED",
        to_state="OPEN", reason="failure_rate", failure_rate=0.55, slow_call_rate=0.6,
        open_duration_s=1.0, trip_streak=1, position=2, trace_id="3ed8ee617ddcbfdc" * 2)
    values.update(changes)
    return TransitionLine(**values)  # type: ignore[arg-type]


def test_a_transition_line_names_the_breaker_states_reason_rates_and_log_position() -> None:
    text = _line().text()
    assert "payments" in text and "CLOSED -> OPEN" in text
    assert "reason=failure_rate" in text and "failure=0.55 slow=0.60" in text
    assert "open 1.0s (streak 1)" in text and "log #2 trace 3ed8ee617ddcbfdc" in text
    assert "open 1.0s" not in _line(from_state="HALF_OPEN", to_state="CLOSED").text()


def _frame(elapsed_s: float) -> Frame:
    row = BreakerRow("payments", "OPEN", "1", 20, 0.6, 0.1, 2.0, 1.5, 2)
    stats = TargetStats({"ok": 10, "rejected": 5}, {"ok": 3.0, "rejected": 20.0})
    return Frame(elapsed_s, 60.0, phase_at(SCHEDULE, elapsed_s), [row], {"payments": stats},
                 {"payments": 4}, 5, (_line(),))


def test_the_plain_view_prints_phases_transitions_and_a_status_now_and_then() -> None:
    out = io.StringIO()
    view = PlainView(out)
    view.phase(phase_at(SCHEDULE, 2.0), 2.0)
    view.transition(_line())
    view.frame(_frame(1.0))  # too early for a status line
    view.frame(_frame(5.5))
    view.frame(_frame(6.0))  # too soon after the last one
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("phase brownout: payments 35% errors, 150-450 ms answers (for 3s)")
    assert "CLOSED -> OPEN" in lines[1]
    assert len(lines) == 3 and "payments open ok 3/s rejected 20/s" in lines[2]
    assert "5 events in the log" in lines[2]


def test_the_live_view_shows_each_breaker_with_its_state_and_rates() -> None:
    console = Console(file=io.StringIO(), width=200, record=True)
    console.print(render(_frame(5.5)))
    text = console.export_text()
    assert "payments" in text and "OPEN" in text
    assert "2.0s (1.5s left)" in text and "60%" in text
    assert re.search(r"CLOSED -> OPEN +failure_rate \(failure 0.55, slow 0.60, open 1.0s\)  log #2",
                     text), text
    assert "(5 events)" in text
