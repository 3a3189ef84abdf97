"""The JSON log lines of ``sidecar proxy`` (started through its CLI): every line one object;
start, config applied, a transition carrying the causing call's trace id, reload, shutdown."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from tests.integration.telemetry._calls import HostTrace, call, wait_until
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

pytestmark = pytest.mark.integration

TRIP_FAST = {"window": {"type": "count", "size": 4}, "minimum_calls": 4,
             "consecutive_failures": 2, "open": {"base_ms": 60000, "jitter": 0}}


def _lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_every_line_is_json_and_the_lifecycle_and_transitions_are_logged(
        tmp_path: Path, upstream: UpstreamProcess, receiver: OtlpReceiver) -> None:
    upstream.configure("logged.Echo", code="UNAVAILABLE")
    upstream.configure("later.Echo", code="UNAVAILABLE")
    config = {
        "service": "checkout",
        "upstreams": {"logged": {"address": upstream.address, "routes": ["/logged."],
                                 "breaker": TRIP_FAST},
                      "later": {"address": upstream.address, "routes": ["/later."],
                                "breaker": TRIP_FAST}},
        "tracing": {"otlp_endpoint": receiver.endpoint, "sample_ratio": 0.0},
        "logging": {"level": "INFO"},
    }
    sidecar = SidecarProcess(tmp_path, config, name="logs")
    try:
        with grpc.insecure_channel(sidecar.address) as channel:
            hosts = [HostTrace.new(sampled=False), HostTrace.new(sampled=False)]
            for host in hosts:
                call(channel, "/logged.Echo/Unary", [("traceparent", host.traceparent)])
        sidecar.wait_for_log('"event":"transition"')
        sidecar.reload(yaml.safe_dump({**sidecar.config, "logging": {"level": "WARNING"}}))
        sidecar.wait_for_log('"source":"reload"')
        with grpc.insecure_channel(sidecar.address) as channel:
            for _ in range(2):  # trips "later": a WARNING line, still written
                call(channel, "/later.Echo/Unary")
        sidecar.wait_for_log('"upstream":"later"')
        sidecar.process.signal(signal.SIGTERM)
        assert sidecar.process.wait(15) == 0
        lines = _lines(sidecar.process.output())
    finally:
        sidecar.close()

    for line in lines:
        assert {"ts", "level", "logger", "msg"} <= set(line), line
    events = [line.get("event") for line in lines]
    assert "start" in events and "config_applied" in events
    transition, later = [line for line in lines if line.get("event") == "transition"]
    assert transition["level"] == "WARNING"
    assert (transition["upstream"], transition["from_state"], transition["to_state"]) == (
        "logged", "closed", "open")
    assert transition["trace_id"] == hosts[1].trace_id  # the call that tripped it, unsampled
    applied = [line for line in lines if line.get("event") == "config_applied"]
    assert [a["source"] for a in applied] == ["start", "reload"]
    assert applied[1]["log_level"] == "WARNING"
    # after the reload to WARNING: the trip of "later" is written, the INFO lines of the
    # shutdown ("sidecar proxy draining", "stopped") are not
    after_reload = lines[lines.index(applied[1]) + 1:]
    assert later in after_reload and later["level"] == "WARNING"
    assert [line for line in after_reload if line["level"] == "INFO"] == []
    assert "shutdown" not in [line.get("event") for line in after_reload]


def test_a_reload_changes_the_sample_ratio_of_a_running_sidecar(
        tmp_path: Path, upstream: UpstreamProcess, receiver: OtlpReceiver) -> None:
    config = {
        "service": "checkout",
        "upstreams": {"reratio": {"address": upstream.address, "routes": ["/reratio."]}},
        "tracing": {"otlp_endpoint": receiver.endpoint, "sample_ratio": 0.0},
    }
    with SidecarProcess(tmp_path, config, name="reratio",
                        env={"OTEL_BSP_SCHEDULE_DELAY": "50"}) as sidecar, \
            grpc.insecure_channel(sidecar.address) as channel:
        before = HostTrace.new()
        call(channel, "/reratio.Echo/Unary")  # root call at ratio 0: not exported
        sidecar.reload(yaml.safe_dump({**sidecar.config, "tracing": {
            "otlp_endpoint": receiver.endpoint, "sample_ratio": 1.0}}))
        sidecar.wait_for_log('"source":"reload"')
        after = HostTrace.new()
        wait_until(lambda: call(channel, "/reratio.Echo/Unary")[0] is grpc.StatusCode.OK)
        call(channel, "/reratio.Echo/Unary", [("traceparent", after.traceparent)])
        spans = receiver.wait_for(lambda s: s.name == "reratio.Echo/Unary")

    assert before.trace_id not in {s.trace_id for s in spans}
    assert len(spans) >= 1
