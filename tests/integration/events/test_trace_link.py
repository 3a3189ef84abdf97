"""A trip recorded in the event log carries the trace id of the call that caused it, and that
trace reached the OTLP receiver: from an event to its trace with one id."""

from __future__ import annotations

import secrets
from pathlib import Path

import grpc
import pytest

from tests.integration.eventlog._server import EventLogProcess
from tests.integration.events._support import query_events, wait_until
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

pytestmark = pytest.mark.integration

FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50"}


def test_events_query_shows_a_trip_whose_trace_id_the_otlp_receiver_got(tmp_path: Path) -> None:
    (tmp_path / "log").mkdir()
    with UpstreamProcess(tmp_path) as upstream, OtlpReceiver() as receiver, \
            EventLogProcess(tmp_path / "log") as log:
        upstream.configure("trip.Svc", code="UNAVAILABLE")
        config = {
            "service": "checkout",
            "instance": "pod-1",
            "upstreams": {"trip": {
                "address": upstream.address, "routes": ["/trip."],
                "breaker": {"consecutive_failures": 1, "open": {"base_ms": 60000}}}},
            "eventlog": {"address": log.address, "outbox_path": str(tmp_path / "outbox.db"),
                         "flush_interval_ms": 100},
            "tracing": {"otlp_endpoint": receiver.endpoint, "sample_ratio": 1.0},
        }
        with SidecarProcess(tmp_path, config, env=FAST_EXPORT) as sidecar, \
                grpc.insecure_channel(sidecar.address) as channel:
            host_trace_id = secrets.token_hex(16)
            traceparent = f"00-{host_trace_id}-{secrets.token_hex(8)}-01"
            with pytest.raises(grpc.RpcError) as failed:
                channel.unary_unary("/trip.Svc/Unary")(
                    b"ping", metadata=(("traceparent", traceparent),), timeout=10)
            assert failed.value.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]

            trips: list[dict[str, object]] = []

            def trip_recorded() -> bool:
                trips[:] = [e for e in query_events(log.address, "--upstream", "trip",
                                                    "--type", "BreakerTransitioned")
                            if e["payload"]["to_state"] == "BREAKER_STATE_OPEN"]  # type: ignore[index]
                return bool(trips)

            wait_until(trip_recorded, "the trip reached the event log")

        (trip,) = trips
        assert trip["trace_id"] == host_trace_id  # the call's span continues the host's trace
        spans = receiver.wait_for(lambda s: s.trace_id == trip["trace_id"]
                                  and s.name == "trip.Svc/Unary")
        assert spans, "the call that tripped the breaker was traced"
