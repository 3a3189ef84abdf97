"""Endpoint metrics and logs of a real ``sidecar proxy`` (started through its CLI) over three
real upstream processes, two of them failing: with ``max_ejection_percent`` 50 only one of the
two may be ejected, the other's ejection is refused, and /metrics says both. Per-endpoint
request series exist only with ``metrics: {per_endpoint: true}``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.integration.telemetry._calls import call, wait_until
from tests.integration.telemetry.test_metrics import Scrape
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

pytestmark = pytest.mark.integration

METHOD = "/orders.Svc/Unary"


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[UpstreamProcess]]:
    with UpstreamProcess(tmp_path) as healthy, UpstreamProcess(tmp_path) as sick_1, \
            UpstreamProcess(tmp_path) as sick_2:
        for sick in (sick_1, sick_2):
            sick.configure("orders.Svc", code="UNAVAILABLE")
        yield [healthy, sick_1, sick_2]


def _config(replicas: list[UpstreamProcess], **extra: Any) -> dict[str, Any]:
    return {
        "service": "checkout",
        "upstreams": {
            "orders": {
                "endpoints": [r.address for r in replicas], "routes": ["/orders."],
                "balancer": "round_robin",
                "outlier_detection": {"consecutive_failures": 2, "base_ejection_ms": 60000,
                                      "max_ejection_percent": 50},
                "breaker": {"failure_rate": 1.0, "consecutive_failures": None},
            },
            "ledger": {"address": replicas[0].address, "routes": ["/ledger."]},
        },
        **extra,
    }


def _scrape(sidecar: SidecarProcess) -> Scrape:
    return Scrape(f"http://{sidecar.config['metrics_listen']}/metrics")


def test_ejections_refusals_and_the_endpoint_gauge_on_metrics_and_in_the_log(
        tmp_path: Path, replicas: list[UpstreamProcess]) -> None:
    healthy, sick_1, sick_2 = replicas
    config = _config(replicas, metrics={"per_endpoint": True})
    with SidecarProcess(tmp_path, config) as sidecar, \
            grpc.insecure_channel(sidecar.address) as channel:
        before = _scrape(sidecar)
        for upstream in ("orders", "ledger"):  # every label set from the start
            assert before.value("sidecar_upstream_endpoints", upstream=upstream,
                                state="ejected") == 0
            assert before.value("sidecar_endpoint_ejections_refused_total",
                                upstream=upstream) == 0
            for reason in ("consecutive_failures", "failure_rate"):
                assert before.value("sidecar_endpoint_ejections_total", upstream=upstream,
                                    reason=reason) == 0
        assert before.value("sidecar_upstream_endpoints", upstream="orders", state="active") == 3
        assert before.value("sidecar_upstream_endpoints", upstream="ledger", state="active") == 1
        assert before.value("sidecar_endpoints_changes_total", upstream="orders") == 1

        codes: list[grpc.StatusCode] = []

        def refused() -> bool:
            codes.append(call(channel, METHOD)[0])
            return (_scrape(sidecar).value("sidecar_endpoint_ejections_refused_total",
                                           upstream="orders") or 0) > 0

        wait_until(refused, timeout_s=20, what="a refused ejection")
        after = _scrape(sidecar)
        output = sidecar.process.output()

    assert after.value("sidecar_upstream_endpoints", upstream="orders", state="active") == 2
    assert after.value("sidecar_upstream_endpoints", upstream="orders", state="ejected") == 1
    assert after.value("sidecar_endpoint_ejections_total", upstream="orders",
                       reason="consecutive_failures") == 1
    assert after.value("sidecar_endpoints_changes_total", upstream="orders") == 1
    per_endpoint: dict[str, float] = {}
    for (name, labels), value in after.samples.items():
        if name == "sidecar_endpoint_requests_total":
            endpoint = dict(labels)["endpoint"]
            per_endpoint[endpoint] = per_endpoint.get(endpoint, 0) + value
    assert set(per_endpoint) == {r.address for r in replicas}
    assert sum(per_endpoint.values()) == len(codes)
    assert after.value("sidecar_endpoint_requests_total", upstream="orders",
                       endpoint=healthy.address, code="OK") == codes.count(grpc.StatusCode.OK)

    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    (ejected,) = [line for line in lines if line.get("event") == "endpoint_ejected"]
    assert ejected["endpoint"] in (sick_1.address, sick_2.address)
    assert ejected["msg"] == (f"upstream orders: endpoint {ejected['endpoint']} ejected for "
                              "60.0 s (2 consecutive failures, ejection 1 in a row)")
    assert len(ejected["trace_id"]) == 32  # the failing call's
    first_sets = [line for line in lines if line.get("event") == "endpoints_changed"]
    assert sorted(line["upstream"] for line in first_sets) == ["ledger", "orders"]


def test_without_per_endpoint_there_are_no_per_endpoint_series(
        tmp_path: Path, replicas: list[UpstreamProcess]) -> None:
    with SidecarProcess(tmp_path, _config(replicas)) as sidecar, \
            grpc.insecure_channel(sidecar.address) as channel:
        for _ in range(6):
            call(channel, METHOD)
        scrape = _scrape(sidecar)
    assert "sidecar_endpoint_requests" not in scrape.families
    assert sum(value for (name, labels), value in scrape.samples.items()
               if name == "sidecar_requests_total" and dict(labels)["upstream"] == "orders") == 6
