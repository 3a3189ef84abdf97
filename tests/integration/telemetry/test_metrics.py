"""Every contract metric of the sidecar (docs/observability.md), scraped over HTTP from
``sidecar proxy`` started through its CLI, after a scripted scenario on a real upstream:
successes, failures, a trip, rejections, recovery, a fallback, an overflow, an unrouted call."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from sidecar.telemetry.metrics import DEFAULT_DURATION_BUCKETS_S
from tests.integration.telemetry._calls import HostTrace, call, wait_until
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

pytestmark = pytest.mark.integration

PAY = "/pay.Echo/Unary"
OPEN_BASE_S = 0.3


class Scrape:
    """One scrape of /metrics in the text format, parsed with prometheus_client's parser."""

    def __init__(self, url: str) -> None:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = {(s.name, frozenset(s.labels.items())): s.value
                        for f in self.families.values() for s in f.samples}

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def label_names(self, family: str) -> set[frozenset[str]]:
        return {frozenset(s.labels) for s in self.families[family].samples
                if s.name == family or s.name == family + "_total"}


@pytest.fixture
def sidecar(tmp_path: Path, upstream: UpstreamProcess) -> Iterator[SidecarProcess]:
    trip_on_rate = {"window": {"type": "count", "size": 4}, "minimum_calls": 4,
                    "failure_rate": 0.5, "consecutive_failures": None, "half_open_probes": 1,
                    "open": {"base_ms": OPEN_BASE_S * 1000, "multiplier": 2, "jitter": 0}}
    config = {
        "service": "checkout",
        "upstreams": {
            "pay": {"address": upstream.address, "routes": ["/pay."], "breaker": trip_on_rate},
            "fbs": {"address": upstream.address, "routes": ["/fbs."],
                    "breaker": {"consecutive_failures": 1,
                                "open": {"base_ms": 60000, "jitter": 0}},
                    "fallback": {"status": "FAILED_PRECONDITION", "message": "degraded"}},
            "lim": {"address": upstream.address, "routes": ["/lim."],
                    "max_concurrent_requests": 1},
        },
    }
    with SidecarProcess(tmp_path, config) as process:
        yield process


def _overflow_one_call(channel: grpc.Channel, upstream: UpstreamProcess) -> grpc.StatusCode:
    """Hold lim's only slot with a slow call and send a second one alongside it."""
    upstream.configure("lim.Echo", delay_ms=1000)
    codes: list[grpc.StatusCode] = []
    slow = threading.Thread(target=lambda: codes.append(call(channel, "/lim.Echo/Unary")[0]))
    slow.start()
    wait_until(lambda: upstream.method_stats("/lim.Echo/Unary").get("in_flight") == 1,
               what="the slow call reaching the upstream")
    code, _ = call(channel, "/lim.Echo/Unary")
    slow.join()
    assert codes == [grpc.StatusCode.OK]
    return code


def test_a_scripted_scenario_shows_in_every_contract_metric(
        sidecar: SidecarProcess, upstream: UpstreamProcess) -> None:
    url = f"http://{sidecar.config['metrics_listen']}/metrics"
    before = Scrape(url)
    for name in ("pay", "fbs", "lim"):
        for metric in ("sidecar_breaker_rejections_total", "sidecar_fallbacks_total",
                       "sidecar_overflow_total"):
            assert before.value(metric, upstream=name) == 0, (metric, name)
    assert before.value("sidecar_breaker_state", upstream="pay", state="closed") == 1
    assert before.value("sidecar_breaker_open_duration_seconds", upstream="pay") == OPEN_BASE_S

    with grpc.insecure_channel(sidecar.address) as channel:
        # successes, then failures until the failure rate trips the breaker, then rejections
        for _ in range(3):
            assert call(channel, PAY)[0] is grpc.StatusCode.OK
        upstream.configure("pay.Echo", code="UNAVAILABLE")
        for _ in range(2):
            assert call(channel, PAY)[0] is grpc.StatusCode.UNAVAILABLE
        rejections = [call(channel, PAY) for _ in range(3)]
        assert all(t.get("x-sidecar-breaker") == "open" for _, t in rejections)

        tripped = Scrape(url)
        assert tripped.value("sidecar_breaker_state", upstream="pay", state="open") == 1
        assert tripped.value("sidecar_breaker_state", upstream="pay", state="closed") == 0
        assert tripped.value("sidecar_breaker_open_duration_seconds",
                             upstream="pay") == OPEN_BASE_S

        # recovery: the upstream heals, the open period ends, one healthy probe closes it
        upstream.configure("pay.Echo")
        time.sleep(int(rejections[-1][1]["x-sidecar-retry-after-ms"]) / 1000 + 0.05)
        assert call(channel, PAY)[0] is grpc.StatusCode.OK

        # a fallback, an overflow, an unrouted call, and one traced call for the exemplar
        upstream.configure("fbs.Echo", code="UNAVAILABLE")
        assert call(channel, "/fbs.Echo/Unary")[0] is grpc.StatusCode.UNAVAILABLE
        assert call(channel, "/fbs.Echo/Unary")[0] is grpc.StatusCode.FAILED_PRECONDITION
        assert _overflow_one_call(channel, upstream) is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert call(channel, "/nowhere.Svc/Method")[0] is grpc.StatusCode.UNIMPLEMENTED
        host = HostTrace.new()
        assert call(channel, PAY, [("traceparent", host.traceparent)])[0] is grpc.StatusCode.OK

    after = Scrape(url)

    # sidecar_requests_total{upstream,method,code}
    assert after.label_names("sidecar_requests") == {frozenset({"upstream", "method", "code"})}
    assert after.value("sidecar_requests_total", upstream="pay", method=PAY, code="OK") == 5
    assert after.value("sidecar_requests_total", upstream="pay", method=PAY,
                       code="UNAVAILABLE") == 5
    assert after.value("sidecar_requests_total", upstream="fbs", method="/fbs.Echo/Unary",
                       code="FAILED_PRECONDITION") == 1
    assert after.value("sidecar_requests_total", upstream="lim", method="/lim.Echo/Unary",
                       code="RESOURCE_EXHAUSTED") == 1
    assert after.value("sidecar_requests_total", upstream="_unrouted_", method="_unrouted_",
                       code="UNIMPLEMENTED") == 1
    assert not [k for k in after.samples if ("method", "/nowhere.Svc/Method") in k[1]]

    # sidecar_request_duration_seconds (histogram, 100 us .. 10 s)
    assert after.families["sidecar_request_duration_seconds"].type == "histogram"
    buckets = sorted(float(dict(labels)["le"]) for name, labels in after.samples
                     if name == "sidecar_request_duration_seconds_bucket"
                     and ("upstream", "pay") in labels)
    assert buckets == [*DEFAULT_DURATION_BUCKETS_S, float("inf")]
    assert after.value("sidecar_request_duration_seconds_count", upstream="pay",
                       method=PAY) == 10
    assert after.value("sidecar_request_duration_seconds_bucket", upstream="pay", method=PAY,
                       le="+Inf") == 10

    # sidecar_breaker_transitions_total{upstream,from_state,to_state}
    def transitions(upstream_name: str, from_state: str, to_state: str) -> float | None:
        return after.value("sidecar_breaker_transitions_total", upstream=upstream_name,
                           from_state=from_state, to_state=to_state)

    assert transitions("pay", "closed", "open") == 1
    assert transitions("pay", "open", "half_open") == 1
    assert transitions("pay", "half_open", "closed") == 1
    assert transitions("fbs", "closed", "open") == 1

    # rejections, fallbacks, overflows per upstream
    assert after.value("sidecar_breaker_rejections_total", upstream="pay") == 3
    assert after.value("sidecar_breaker_rejections_total", upstream="fbs") == 1
    assert after.value("sidecar_fallbacks_total", upstream="fbs") == 1
    assert after.value("sidecar_fallbacks_total", upstream="pay") == 0
    assert after.value("sidecar_overflow_total", upstream="lim") == 1

    # sidecar_breaker_state{upstream,state} and open duration, computed at scrape time
    assert after.families["sidecar_breaker_state"].type == "gauge"
    for name, current in (("pay", "closed"), ("fbs", "open"), ("lim", "closed")):
        for state in ("closed", "open", "half_open"):
            expected = 1 if state == current else 0
            assert after.value("sidecar_breaker_state", upstream=name, state=state) == expected
    # one trip in the streak: the next open period would be twice the base
    assert after.value("sidecar_breaker_open_duration_seconds",
                       upstream="pay") == 2 * OPEN_BASE_S
    assert after.value("sidecar_breaker_open_duration_seconds", upstream="fbs") == 60.0

    # OpenMetrics: the latency buckets carry the trace id of a sampled call as an exemplar
    request = urllib.request.Request(
        url, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    with urllib.request.urlopen(request, timeout=5) as response:
        families = list(openmetrics_families(response.read().decode()))
    exemplar_traces = {s.exemplar.labels["trace_id"] for f in families for s in f.samples
                       if f.name == "sidecar_request_duration_seconds" and s.exemplar}
    assert host.trace_id in exemplar_traces
