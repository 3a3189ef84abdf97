"""Load shedding seen everywhere: a real ``sidecar proxy`` (started through its CLI) with an
adaptive limit capped at 4 in front of a real upstream process that takes 100 ms a call, and a
real ``sidecar eventlog serve``. Bursts of 12 concurrent calls get some shed; then the load
stops and the period ends. The shed calls are counted on /metrics exactly as the host saw them,
the limit gauge is the adaptive one, one WARNING and one INFO line mark the period, and a
``LoadShedding`` started/stopped pair reaches the event log, whose projection and metrics count
the period and its shed calls."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.integration.eventlog._server import EventLogProcess
from tests.integration.events._support import INSTANCE, SERVICE, query_events, wait_until
from tests.integration.telemetry.test_metrics import Scrape
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

pytestmark = pytest.mark.integration

METHOD = "/sidecar.test.Echo/Unary"
LIMIT = 4
BURST, BURSTS = 12, 3


def _config(upstream: str, eventlog: str, outbox: Path) -> dict[str, Any]:
    return {
        "service": SERVICE, "instance": INSTANCE,
        "upstreams": {"catalog": {
            "address": upstream, "routes": ["/sidecar.test."], "timeout_ms": 5000,
            "max_concurrent_requests": LIMIT,  # caps the adaptive limit: shedding is certain
            "adaptive_concurrency": {"algorithm": "gradient2", "initial_limit": LIMIT,
                                     "min_limit": 2, "quiet_ms": 300},
        }},
        "eventlog": {"address": eventlog, "outbox_path": str(outbox), "flush_interval_ms": 100},
    }


def _burst(channel: grpc.Channel) -> list[grpc.StatusCode]:
    call = channel.unary_unary(METHOD)
    futures: list[Future[Any]] = [call.future(b"x", timeout=5) for _ in range(BURST)]
    codes = []
    for future in futures:
        try:
            future.result()
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as error:
            codes.append(error.code())  # type: ignore[attr-defined]
    return codes


def test_a_shedding_period_is_counted_logged_and_recorded_in_the_event_log(
        tmp_path: Path) -> None:
    (tmp_path / "log").mkdir()
    with UpstreamProcess(tmp_path) as upstream, EventLogProcess(tmp_path / "log") as log:
        upstream.configure("*", delay_ms=100)
        config = _config(upstream.address, log.address, tmp_path / "outbox.db")
        with SidecarProcess(tmp_path, config) as sidecar, \
                grpc.insecure_channel(sidecar.address) as channel:
            metrics = f"http://{sidecar.config['metrics_listen']}/metrics"
            assert Scrape(metrics).value("sidecar_load_shed_total", upstream="catalog") == 0
            codes = [code for _ in range(BURSTS) for code in _burst(channel)]
            shed = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
            assert shed > 0 and codes.count(grpc.StatusCode.OK) + shed == len(codes), codes
            scrape = Scrape(metrics)
            assert scrape.value("sidecar_load_shed_total", upstream="catalog") == shed
            limit = scrape.value("sidecar_concurrency_limit", upstream="catalog")
            assert limit is not None and 2 <= limit <= LIMIT
            assert scrape.value("sidecar_concurrency_in_flight", upstream="catalog") == 0

            sidecar.wait_for_log("upstream catalog: shedding calls over the adaptive limit")
            output = sidecar.wait_for_log("upstream catalog: stopped shedding after")

            def both() -> bool:
                found = [e for e in query_events(log.address, "--upstream", "catalog")
                         if e["type"] == "LoadShedding"]
                events[:] = found
                return any(e["payload"]["phase"] == "stopped" for e in found)

            events: list[dict[str, Any]] = []
            wait_until(both, "the LoadShedding pair to reach the event log")
            started = output.count("shedding calls over the adaptive limit")
            pair = {"service": SERVICE, "upstream": "catalog"}
            wait_until(lambda: Scrape(log.metrics_url).value(
                "eventlog_shed_calls_total", **pair) == shed, "the projection to count them")
            from_log = Scrape(log.metrics_url)
            assert from_log.value("eventlog_shedding_periods_total", **pair) == started
            assert from_log.value("eventlog_instances_shedding", **pair) == 0

    print(f"calls {len(codes)}, shed {shed}, limit {limit}, periods {started}:",
          [(e["payload"]["phase"], e["payload"].get("shed")) for e in events])
    assert [e["payload"]["phase"] for e in events] == ["started", "stopped"] * started
    stopped = [e["payload"] for e in events if e["payload"]["phase"] == "stopped"]
    assert sum(int(p["shed"]) for p in stopped) == shed  # uint64: JSON strings
    assert all(p["algorithm"] == "gradient2" and int(p["duration_ms"]) > 0 for p in stopped)
    assert {e["payload"]["instance"] for e in events} == {INSTANCE}
