"""Every query of every dashboard panel returns data from a real Prometheus.

Debian's ``prometheus`` scrapes a real sidecar and a real event log (each in its own process,
started through the CLI) with ``deploy/k8s/prometheus.yml``, its Kubernetes discovery replaced
by static targets that carry the labels of the example pods in ``deploy/k8s/`` (so the
relabelling that gives the dashboards their ``service`` and ``instance`` labels is the one
that runs). A scripted scenario drives traffic through the sidecar:

1. healthy traffic to two upstreams, ``payments`` and ``inventory``; and to ``orders``, whose
   two endpoints are the real upstream and a second upstream process that fails: outlier
   detection ejects it, it comes back, is ejected again, and so on;
2. ``inventory`` slows down: its concurrency limit overflows;
3. ``payments`` fails: the breaker trips, rejects, the fallback answers; the event log
   records the trip;
4. the event log is killed (SIGKILL) while the breaker keeps probing: events pile up in the
   sidecar's outbox and shipping fails;
5. the event log restarts on the same store and the outbox drains into it;
6. ``payments`` heals: the breaker recovers through HALF_OPEN;
7. a shipper-style retry appends an already stored event again (a duplicate);
8. outlier detection on a second ``checkout`` pod: its endpoint events (endpoints joined, two
   ejected, one back; and a LoadShedding period, started then stopped) are appended straight to
   the event log, as that pod's sidecar would ship them;
9. a reload takes the failing process out of ``orders``' endpoints (a set change).

Then each dashboard's variables, annotations and panel targets are expanded the way Grafana
would (concrete variable values, ``$__rate_interval`` for a 1 s scrape) and run through the
HTTP API over the scenario's time range. A query with no data is a broken panel.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from dashboards import build
from dashboards import names as dashboard_names
from dashboards.queries import LABEL_VALUES, DashboardQuery, dashboard_queries, expand
from sidecar.v1 import eventlog_pb2, eventlog_pb2_grpc, events_pb2
from tests.contract.endpoint_events import (
    ENDPOINT_A,
    ENDPOINT_B,
    ENDPOINT_C,
    endpoint_ejected,
    endpoint_returned,
    endpoints_changed,
)
from tests.contract.resilience_events import load_shedding
from tests.integration.dashboards.k8s_pods import ROOT, fake_pod
from tests.support.events import StreamFactory, to_proto
from tests.support.procs import SIDECAR_BIN, ManagedProcess, free_port, wait_for_port
from tests.support.prometheus import PrometheusServer, static_from_kubernetes
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

SCRAPE_S = 1.0
SERVICE = "checkout"
INSTANCE = "checkout-7d9f-x1"  # the pod name: the sidecar's instance and the target's
PAYMENTS, INVENTORY = "shop.Payments", "shop.Inventory"
ORDERS = "shop.Orders"  # two endpoints, one of them failing: outlier ejection
CALL_INTERVAL_S = 0.02  # one call to each upstream every 20 ms
CALL_TIMEOUT_S = 2.0

# Queries whose value must not only exist but show the scenario (panel title, ref id).
MUST_BE_POSITIVE = {
    ("Requests per second", "A"), ("Error ratio", "A"), ("Rejections and fallbacks", "A"),
    ("Rejections and fallbacks", "B"), ("Concurrency-limit overflows", "A"),
    ("Outbox depth", "A"), ("Shipping lag", "A"), ("Events shipped and shipping failures", "A"),
    ("Events shipped and shipping failures", "B"), ("Transitions", "A"),
    ("Transitions by service and upstream", "A"), ("Instances with an open breaker", "A"),
    ("Seconds spent open", "A"), ("Mean time to recover", "A"),
    ("Append rate by event type", "A"), ("Duplicate appends", "A"), ("Head position", "A"),
    ("Breaker state", "A"), ("Breaker state per instance", "A"),
    ("Endpoint ejections by service and upstream", "A"), ("Endpoints ejected now", "A"),
    ("Endpoints per upstream", "A"), ("Endpoints per upstream", "B"), ("Endpoint ejections", "A"),
    ("Endpoint set changes", "A"),
    # inventory's max_concurrent_requests, and its calls held while it is slow
    ("Concurrency limit vs in flight", "A"), ("Concurrency limit vs in flight", "B"),
    ("Shedding periods by service and upstream", "A"), ("Instances shedding now", "A"),
}


class Load:
    """Calls through the sidecar from a background thread: one call to each upstream every
    CALL_INTERVAL_S, without waiting for answers (futures), counting status codes."""

    def __init__(self, address: str) -> None:
        self._channel = grpc.insecure_channel(address)
        self._calls = {
            name: self._channel.unary_unary(f"/{name}/Unary")
            for name in (PAYMENTS, INVENTORY, ORDERS)
        }
        self.codes: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._thread.start()

    def _count(self, upstream: str) -> Callable[[Future[Any]], None]:
        def done(future: Future[Any]) -> None:
            error = future.exception()
            code = error.code().name if isinstance(error, grpc.Call) else "OK"
            with self._lock:
                self.codes[(upstream, code)] = self.codes.get((upstream, code), 0) + 1
        return done

    def _run(self) -> None:
        while not self._stop.wait(CALL_INTERVAL_S):
            for name, call in self._calls.items():
                future = call.future(b"order-42", timeout=CALL_TIMEOUT_S)
                future.add_done_callback(self._count(name))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._channel.close()


class EventLogProcess:
    """``sidecar eventlog serve`` on fixed ports, restartable on the same store (SIGKILL)."""

    def __init__(self, tmp_path: Path) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._args = [SIDECAR_BIN, "eventlog", "serve",
                      "--store", f"sqlite:///{tmp_path / 'events.db'}",
                      "--listen", self.address,
                      "--metrics-listen", f"127.0.0.1:{self.metrics_port}"]
        self._log = tmp_path / "eventlog.log"
        self.process = self._start()

    def _start(self) -> ManagedProcess:
        process = ManagedProcess(self._args, self._log)
        try:
            wait_for_port(self.port, proc=process.proc)
            wait_for_port(self.metrics_port, proc=process.proc)
        except Exception:
            print(process.output())
            process.close()
            raise
        return process

    def kill(self) -> None:
        self.process.kill()
        self.process.close()

    def restart(self) -> None:
        self.process = self._start()

    def close(self) -> None:
        self.process.close()


def _wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.fixture
def system(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with UpstreamProcess(tmp_path) as upstream, UpstreamProcess(tmp_path) as sick:
        sick.configure(ORDERS, code="UNAVAILABLE", details="orders replica sick")
        eventlog = EventLogProcess(tmp_path)
        try:
            config = {
                "service": SERVICE, "instance": INSTANCE,
                "upstreams": {
                    "payments": {
                        "address": upstream.address, "routes": [f"/{PAYMENTS}/"],
                        "timeout_ms": 1000,
                        "breaker": {
                            "window": {"type": "count", "size": 20}, "minimum_calls": 10,
                            "failure_rate": 0.5, "consecutive_failures": 5,
                            "half_open_probes": 2,
                            "open": {"base_ms": 500, "multiplier": 2.0, "max_ms": 2000,
                                     "jitter": 0.1},
                        },
                        "fallback": {"status": "UNAVAILABLE",
                                     "message": "payments is down, retry later"},
                    },
                    "inventory": {
                        "address": upstream.address, "routes": [f"/{INVENTORY}/"],
                        "timeout_ms": 1000, "max_concurrent_requests": 2,
                        "breaker": {"slow_call_ms": 5000},
                    },
                    "orders": _orders(upstream, sick),
                },
                "eventlog": {"address": eventlog.address,
                             "outbox_path": str(tmp_path / "outbox.db")},
            }
            with SidecarProcess(tmp_path, config, name="sidecar") as sidecar:
                yield {"upstream": upstream, "eventlog": eventlog, "sidecar": sidecar,
                       "tmp_path": tmp_path, "sick": sick}
        finally:
            eventlog.close()


def _orders(upstream: UpstreamProcess, sick: UpstreamProcess) -> dict[str, Any]:
    """``orders``: the real upstream and a failing replica; the failing one is ejected after 3
    failures in a row for 2 s (then 4 s, 6 s), and the upstream as a whole never trips.

    Round robin, so the failing replica gets every other call: with p2c_ewma the healthy one's
    lower latency estimate can win nearly every pick at this test's light load (a CI run gave
    the failing replica 2 calls in 683), and it would never fail three times in a row."""
    return {
        "endpoints": [upstream.address, sick.address], "routes": [f"/{ORDERS}/"],
        "balancer": "round_robin",
        "timeout_ms": 1000,
        "outlier_detection": {"consecutive_failures": 3, "base_ejection_ms": 2000,
                              "max_ejection_ms": 6000},
        "breaker": {"failure_rate": 0.9, "consecutive_failures": None},
    }


def _endpoint_set_change(system: dict[str, Any], prometheus: PrometheusServer) -> None:
    """9. A reload takes the failing replica out of ``orders``' endpoints."""
    sidecar: SidecarProcess = system["sidecar"]
    selector = 'upstream="orders"'
    _wait_until(_seen(prometheus, f"{dashboard_names.SIDECAR_ENDPOINT_EJECTIONS}{{{selector}}}"),
                15, "the failing orders endpoint to be ejected")
    config = copy.deepcopy(sidecar.config)
    config["upstreams"]["orders"]["endpoints"] = [system["upstream"].address]
    sidecar.reload(config)
    changes = dashboard_names.SIDECAR_ENDPOINTS_CHANGES
    _wait_until(_seen(prometheus, f"max_over_time(increase({changes}"
                                  f"{{{selector}}}[4s])[1m:1s])"),
                15, "the endpoint set change to show as an increase")


def _prometheus(tmp_path: Path, sidecar: SidecarProcess, eventlog: EventLogProcess
                ) -> PrometheusServer:
    k8s_config = yaml.safe_load((ROOT / "deploy" / "k8s" / "prometheus.yml").read_text())
    metrics_port = sidecar.config["metrics_listen"].rpartition(":")[2]
    pods = [
        fake_pod("checkout", INSTANCE, annotations={"prometheus.io/port": metrics_port}),
        fake_pod("eventlog", "eventlog-0",
                 annotations={"prometheus.io/port": str(eventlog.metrics_port)}),
    ]
    return PrometheusServer(static_from_kubernetes(k8s_config, pods, SCRAPE_S),
                            tmp_path / "prometheus")


def _seen(prometheus: PrometheusServer, expr: str) -> Callable[[], bool]:
    """True once ``expr`` (an instant query) has a positive value."""
    def check() -> bool:
        result = prometheus.api("query", query=expr)["result"]
        return any(float(series["value"][1]) > 0 for series in result)
    return check


def _run_scenario(system: dict[str, Any], prometheus: PrometheusServer) -> None:
    upstream: UpstreamProcess = system["upstream"]
    eventlog: EventLogProcess = system["eventlog"]
    sidecar: SidecarProcess = system["sidecar"]
    recent = "[1m]"
    load = Load(sidecar.address)
    try:
        time.sleep(3)  # 1. healthy
        upstream.configure(INVENTORY, delay_ms=300)  # 2. slow: overflows at limit 2
        time.sleep(3)
        upstream.configure(INVENTORY)
        upstream.configure(PAYMENTS, code="UNAVAILABLE", details="payments outage")  # 3. trip
        _wait_until(lambda: sidecar.breaker("payments").state == events_pb2.BREAKER_STATE_OPEN,
                    10, "the payments breaker to open")
        _wait_until(_seen(prometheus, f'max_over_time(eventlog_breaker_state{{service="{SERVICE}"'
                                      f', upstream="payments", state="open"}}{recent})'),
                    15, "the event log to show the breaker open")
        eventlog.kill()  # 4. the log is gone while the breaker keeps flapping
        _wait_until(_seen(prometheus, f"max_over_time(sidecar_outbox_pending_events{recent})"),
                    15, "events to wait in the sidecar's outbox")
        # wait for what the panel shows: a rate needs two scrapes of a growing counter, and a
        # series that first appears at its first failure gives rate() nothing to compare with
        ship_failures = dashboard_names.SIDECAR_SHIPPING_FAILURES
        _wait_until(_seen(prometheus, f"max_over_time(rate({ship_failures}"
                                      f"[4s])[1m:1s])"),
                    20, "failed shipping attempts")
        eventlog.restart()  # 5. the log is back and the outbox drains
        _wait_until(lambda: not _seen(prometheus, "sidecar_outbox_pending_events")(),
                    30, "the outbox to drain")
        upstream.configure(PAYMENTS)  # 6. payments heals
        _wait_until(
            lambda: sidecar.breaker("payments").state == events_pb2.BREAKER_STATE_CLOSED,
            20, "the payments breaker to close again")
        _wait_until(_seen(prometheus, 'eventlog_breaker_transitions_total{'
                                      f'service="{SERVICE}", from_state="half_open", '
                                      'to_state="closed"}'),
                    20, "the recovery to reach the event log and Prometheus")
        time.sleep(2)
    finally:
        load.close()
    print("calls by (upstream, code):", dict(sorted(load.codes.items())))
    assert load.codes.get((INVENTORY, "RESOURCE_EXHAUSTED"), 0) > 0, load.codes
    with grpc.insecure_channel(eventlog.address) as channel:  # 7. a retried append
        stub = eventlog_pb2_grpc.EventLogStub(channel)
        (stored,) = stub.ReadAll(eventlog_pb2.ReadAllRequest(from_position=1, limit=1),
                                 timeout=5).events
        reply = stub.Append(eventlog_pb2.AppendRequest(events=[stored]), timeout=5)
        assert reply.results[0].duplicate
    _endpoint_events(eventlog, prometheus)  # 8.
    _endpoint_set_change(system, prometheus)  # 9.
    time.sleep(3 * SCRAPE_S)


def _endpoint_events(eventlog: EventLogProcess, prometheus: PrometheusServer) -> None:
    """Endpoint events of a second checkout pod, appended to the log directly (the scenario's
    sidecar has one endpoint per upstream: nothing to eject)."""
    pod = StreamFactory(SERVICE, "checkout-7d9f-x2")
    selector = f'service="{SERVICE}", upstream="payments"'
    with grpc.insecure_channel(eventlog.address) as channel:
        stub = eventlog_pb2_grpc.EventLogStub(channel)

        def append(*events: Any) -> None:
            stub.Append(eventlog_pb2.AppendRequest(events=[to_proto(e) for e in events]),
                        timeout=5)

        append(pod.config_applied(["payments", "inventory"], at_ns=time.time_ns()),
               endpoints_changed(pod, "payments", added=[ENDPOINT_A, ENDPOINT_B, ENDPOINT_C],
                                 at_ns=time.time_ns()))
        # increase() needs the counter scraped before the ejection (at 0, from ConfigApplied)
        _wait_until(_seen(prometheus, f"count_over_time(eventlog_endpoint_ejections_total"
                                      f"{{{selector}}}[1m]) >= 2"),
                    15, "the endpoint ejections counter at 0")
        append(endpoint_ejected(pod, "payments", ENDPOINT_A, at_ns=time.time_ns()),
               endpoint_ejected(pod, "payments", ENDPOINT_B, at_ns=time.time_ns()),
               load_shedding(pod, "payments", phase="started", at_ns=time.time_ns()))
        _wait_until(_seen(prometheus, f"eventlog_endpoints_ejected{{{selector}}}"),
                    15, "the ejected endpoints to reach Prometheus")
        _wait_until(_seen(prometheus, f"eventlog_instances_shedding{{{selector}}}"),
                    15, "the shedding period to reach Prometheus")
        append(endpoint_returned(pod, "payments", ENDPOINT_A, at_ns=time.time_ns()),
               load_shedding(pod, "payments", phase="stopped", shed=40, duration_ms=2_000,
                             at_ns=time.time_ns()))
    _wait_until(_seen(prometheus, f"max_over_time(increase(eventlog_endpoint_ejections_total"
                                  f"{{{selector}}}[4s])[1m:1s])"),
                15, "the ejections to show as an increase")
    _wait_until(_seen(prometheus, f"max_over_time(increase(eventlog_shedding_periods_total"
                                  f"{{{selector}}}[4s])[1m:1s])"),
                15, "the shedding period to show as an increase")


def _has_data(result: list[dict[str, Any]]) -> bool:
    values = [float(v) for series in result for _, v in series.get("values", [])]
    return any(v == v for v in values)  # not NaN


def _max_value(result: list[dict[str, Any]]) -> float:
    values = [float(v) for series in result for _, v in series.get("values", [])]
    return max((v for v in values if v == v), default=float("nan"))


def test_every_dashboard_query_returns_data_from_prometheus(system: dict[str, Any]) -> None:
    with _prometheus(system["tmp_path"], system["sidecar"], system["eventlog"]) as prometheus:
        targets = prometheus.wait_for_targets_up(2)
        by_job = {t["labels"]["job"]: t["labels"] for t in targets}
        # the relabelling of deploy/k8s/prometheus.yml names the sidecar target as dashboards expect
        assert by_job["evergreen-sidecar"]["service"] == SERVICE
        assert by_job["evergreen-sidecar"]["instance"] == INSTANCE
        start = time.time()
        _run_scenario(system, prometheus)
        end = time.time()

        range_s = end - start
        values = {"service": SERVICE, "instance": INSTANCE, "upstream": "payments|inventory|orders",
                  "datasource": "Prometheus"}
        expected_options = {"service": SERVICE, "instance": INSTANCE, "upstream": "payments"}
        checked: list[DashboardQuery] = []
        failures: list[str] = []
        panel_count = 0
        for name, build_dashboard in build.DASHBOARDS.items():
            dashboard = json.loads((ROOT / "dashboards" / name).read_text())
            assert json.loads(build.render(build_dashboard())) == dashboard
            panel_titles = set()
            for query in dashboard_queries(dashboard):
                expr = expand(query.expr, values, step_s=SCRAPE_S, scrape_s=SCRAPE_S,
                              range_s=range_s)
                checked.append(query)
                if query.kind == "variable":
                    match = LABEL_VALUES.match(expr)
                    assert match, expr
                    params: dict[str, str | float] = {"start": start, "end": end}
                    if match.group("match"):
                        params["match[]"] = match.group("match")
                    options = prometheus.api(f"label/{match.group('label')}/values", **params)
                    if expected_options[query.title] not in options:
                        failures.append(f"{query.name}: {expr} -> {options}")
                    continue
                result = prometheus.api("query_range", query=expr, start=start, end=end,
                                        step=SCRAPE_S)["result"]
                if query.kind == "panel":
                    panel_titles.add(query.title)
                if not _has_data(result):
                    failures.append(f"{query.name}: no data for {expr}")
                elif (query.title, query.ref_id) in MUST_BE_POSITIVE and _max_value(result) <= 0:
                    failures.append(f"{query.name}: only zeros for {expr}")
            panel_count += len(panel_titles)

        # exemplars: the latency panel's dots carry trace ids that link to traces
        latency = next(q for q in checked if q.title == "Latency p50 / p95 / p99")
        exemplars = prometheus.api(
            "query_exemplars", start=start, end=end,
            query=expand(latency.expr, values, step_s=SCRAPE_S, scrape_s=SCRAPE_S,
                         range_s=range_s))
        trace_ids = {e["labels"].get("trace_id") for series in exemplars
                     for e in series["exemplars"]}
        if not any(t and len(t) == 32 for t in trace_ids):
            failures.append(f"latency exemplars without trace ids: {exemplars!r:.300}")

        print(f"dashboards: {len(build.DASHBOARDS)}, panels: {panel_count}, queries checked: "
              f"{len(checked)} ({sum(q.kind == 'panel' for q in checked)} panel targets, "
              f"{sum(q.kind == 'annotation' for q in checked)} annotations, "
              f"{sum(q.kind == 'variable' for q in checked)} variables) + exemplars; "
              f"scenario {range_s:.0f}s")
        assert not failures, "broken panels:\n" + "\n".join(failures)
