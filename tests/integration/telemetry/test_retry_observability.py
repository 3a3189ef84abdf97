"""Retries and hedges seen everywhere, on a real ``sidecar proxy`` (started through its CLI) in
front of two real upstream processes and a real OTLP/gRPC receiver.

- One upstream fails: /metrics counts the retries by reason, and each attempt is a
  ``sidecar.attempt`` child span of the call span, the retry an event of the call span.
- One upstream is slow: hedges count won or lost (never as retries), and the attempt spans say
  which one was the hedge and which one lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.integration.telemetry._calls import HostTrace, call
from tests.integration.telemetry.test_metrics import Scrape
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

pytestmark = pytest.mark.integration

METHOD = "/orders.Svc/Unary"
ECHO = "sidecar.test.Echo"  # described by reflection: the proxy's native unary path
ECHO_UNARY = f"/{ECHO}/Unary"
CALLS = 8
UNAVAILABLE_CODE = grpc.StatusCode.UNAVAILABLE.value[0]
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50"}


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[UpstreamProcess, UpstreamProcess]]:
    with UpstreamProcess(tmp_path) as healthy, UpstreamProcess(tmp_path) as sick:
        sick.configure("orders.Svc", code="UNAVAILABLE", details="replica sick")
        yield healthy, sick


def _config(healthy: UpstreamProcess, sick: UpstreamProcess,
            receiver: OtlpReceiver) -> dict[str, Any]:
    return {
        "service": "checkout",
        "upstreams": {"orders": {
            "endpoints": [sick.address, healthy.address], "routes": ["/orders."],
            "balancer": "round_robin", "timeout_ms": 5000,
            "outlier_detection": {"enabled": False},  # the sick replica keeps taking attempts
            "breaker": {"failure_rate": 1.0, "consecutive_failures": None},
            "retry": {"max_attempts": 3, "methods": ["/orders.Svc/"],
                      "backoff": {"base_ms": 5, "max_ms": 20},
                      "budget": {"ratio": 1.0, "min_per_s": 1000}},
        }},
        "tracing": {"otlp_endpoint": receiver.endpoint, "sample_ratio": 1.0},
    }


def _attempts(receiver: OtlpReceiver, call_span: ReceivedSpan) -> list[ReceivedSpan]:
    return sorted(
        (s for s in receiver.spans()
         if s.trace_id == call_span.trace_id and s.name == "sidecar.attempt"),
        key=lambda s: s.attributes["sidecar.attempt"])


def test_retries_show_on_metrics_and_as_attempt_spans_under_the_call_span(
        tmp_path: Path, replicas: tuple[UpstreamProcess, UpstreamProcess]) -> None:
    healthy, sick = replicas
    with OtlpReceiver() as receiver, \
            SidecarProcess(tmp_path, _config(healthy, sick, receiver),
                           env=FAST_EXPORT) as sidecar, \
            grpc.insecure_channel(sidecar.address) as channel:
        scrape = Scrape(f"http://{sidecar.config['metrics_listen']}/metrics")
        assert scrape.value("sidecar_retries_total", upstream="orders", reason="UNAVAILABLE") == 0
        assert scrape.value("sidecar_retry_budget_exhausted_total", upstream="orders") == 0
        hosts = [HostTrace.new() for _ in range(CALLS)]
        codes = [call(channel, METHOD, [("traceparent", h.traceparent)])[0] for h in hosts]
        assert codes == [grpc.StatusCode.OK] * CALLS  # a sick first attempt is retried

        after = Scrape(f"http://{sidecar.config['metrics_listen']}/metrics")
        retries = after.value("sidecar_retries_total", upstream="orders", reason="UNAVAILABLE")
        assert retries is not None and retries >= 1
        assert after.value("sidecar_retry_budget_exhausted_total", upstream="orders") == 0
        budget = sidecar.breaker("orders").retry_budget  # the admin API's view of the budget
        assert (budget.ratio, budget.min_per_s) == (1.0, 1000.0)
        assert (budget.retries, budget.hedges, budget.exhausted) == (retries, 0, 0)
        assert budget.available > 0

        retried: list[tuple[ReceivedSpan, list[ReceivedSpan]]] = []
        for host in hosts:
            (span,) = receiver.wait_for(
                lambda s, t=host.trace_id: s.trace_id == t and s.name == "orders.Svc/Unary")
            if span.event("sidecar.retry") is None:
                continue
            receiver.wait_for(lambda s, t=host.trace_id: s.trace_id == t
                              and s.name == "sidecar.attempt"
                              and s.attributes.get("sidecar.attempt.outcome") == "committed")
            retried.append((span, _attempts(receiver, span)))
        # each retry is one more attempt span, whatever the sick replica's share was
        assert sum(len(attempts) - 1 for _, attempts in retried) == retries
        for span, attempts in retried:
            event = span.event("sidecar.retry")
            assert event is not None
            assert event.attributes["sidecar.retry.reason"] == "UNAVAILABLE"
            assert all(a.parent_span_id == span.span_id for a in attempts)
            assert [a.attributes["sidecar.attempt"] for a in attempts] == list(
                range(1, len(attempts) + 1))
            *failed, last = attempts
            assert last.attributes["sidecar.attempt.outcome"] == "committed"
            assert last.attributes["rpc.grpc.status_code"] == 0
            assert last.attributes["server.port"] == healthy.port
            for attempt in failed:
                assert attempt.attributes["sidecar.attempt.outcome"] == "retried"
                assert attempt.attributes["rpc.grpc.status_code"] == UNAVAILABLE_CODE
                assert attempt.attributes["server.port"] == sick.port
                assert attempt.attributes["sidecar.attempt.hedge"] is False


def test_hedges_count_won_or_lost_never_as_retries_and_their_attempts_say_hedge(
        tmp_path: Path, replicas: tuple[UpstreamProcess, UpstreamProcess]) -> None:
    fast, slow = replicas
    slow.configure(ECHO, delay_ms=400)  # answers OK, too late: the hedge wins
    with OtlpReceiver() as receiver:
        config = _config(fast, slow, receiver)
        orders = config["upstreams"]["orders"]
        del orders["retry"]
        orders["routes"] = [f"/{ECHO}/"]
        orders["hedging"] = {"methods": [f"/{ECHO}/"], "delay_ms": 50, "max_attempts": 2}
        with SidecarProcess(tmp_path, config, env=FAST_EXPORT) as sidecar, \
                grpc.insecure_channel(sidecar.address) as channel:
            metrics = f"http://{sidecar.config['metrics_listen']}/metrics"
            before = Scrape(metrics)
            for outcome in ("won", "lost"):
                assert before.value("sidecar_hedges_total", upstream="orders",
                                    outcome=outcome) == 0
            hosts = [HostTrace.new() for _ in range(CALLS)]
            codes = [call(channel, ECHO_UNARY, [("traceparent", h.traceparent)])[0]
                     for h in hosts]
            assert codes == [grpc.StatusCode.OK] * CALLS

            hedged = []
            for host in hosts:
                (span,) = receiver.wait_for(
                    lambda s, t=host.trace_id: s.trace_id == t and s.name == ECHO_UNARY[1:])
                if span.event("sidecar.hedge") is not None:
                    hedged.append(span)
            assert len(hedged) >= CALLS // 2 - 1  # round robin: every other first try is slow
            # the lost attempt ends when it is cancelled: wait for every hedge's two attempts
            for span in hedged:
                receiver.wait_for(lambda s, t=span.trace_id: s.trace_id == t
                                  and s.name == "sidecar.attempt", count=2)
            after = Scrape(metrics)
            won = after.value("sidecar_hedges_total", upstream="orders", outcome="won")
            lost = after.value("sidecar_hedges_total", upstream="orders", outcome="lost")
            assert won is not None and lost is not None
            assert won + lost == len(hedged)
            assert won >= 1
            assert after.value("sidecar_retries_total", upstream="orders",
                               reason="UNAVAILABLE") == 0
            for span in hedged:
                attempts = _attempts(receiver, span)
                assert [a.attributes["sidecar.attempt.hedge"] for a in attempts] == [False, True]
                assert {a.attributes["sidecar.attempt.outcome"] for a in attempts} == {
                    "committed", "lost"}
                assert all(a.parent_span_id == span.span_id for a in attempts)
