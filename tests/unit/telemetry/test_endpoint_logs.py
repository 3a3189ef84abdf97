"""One JSON log line per ejection, return and endpoint-set change, with the causing call's ids."""

from __future__ import annotations

import io
import json
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

from sidecar.telemetry.logging import LoggingEndpointListener, configure_logging
from tests.unit.telemetry.builders import A, B, C, FakeClock, balancer, change, ejection, returned


def test_an_ejection_is_one_warning_line_saying_why_and_for_how_long() -> None:
    stream = io.StringIO()
    pipeline = configure_logging("INFO", stream)
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("call") as span:
        LoggingEndpointListener().on_ejected(
            ejection(endpoint="10.0.0.7:50051", ejection_s=30.0, ejections_in_a_row=2))
    pipeline.close()

    (line,) = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert line["msg"] == ("upstream payments: endpoint 10.0.0.7:50051 ejected for 30.0 s "
                           "(5 consecutive failures, ejection 2 in a row)")
    assert line["level"] == "WARNING" and line["logger"] == "sidecar.balancer"
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert {k: line[k] for k in ("event", "upstream", "endpoint", "reason", "ejection_ms",
                                 "ejections_in_a_row", "consecutive_failures", "failure_rate",
                                 "calls")} == {
        "event": "endpoint_ejected", "upstream": "payments", "endpoint": "10.0.0.7:50051",
        "reason": "consecutive_failures", "ejection_ms": 30000, "ejections_in_a_row": 2,
        "consecutive_failures": 5, "failure_rate": 1.0, "calls": 5,
    }


def _logged(action: Any) -> list[dict[str, Any]]:
    stream = io.StringIO()
    pipeline = configure_logging("INFO", stream)
    try:
        action(LoggingEndpointListener())
    finally:
        pipeline.close()
    return [json.loads(x) for x in stream.getvalue().splitlines()]


def test_a_failure_rate_ejection_names_the_rate_and_the_calls() -> None:
    (line,) = _logged(lambda log: log.on_ejected(
        ejection(reason="failure_rate", failure_rate=0.625, calls=40, ejection_s=60.0,
                 ejections_in_a_row=1)))
    assert line["msg"] == ("upstream payments: endpoint 10.0.0.1:50051 ejected for 60.0 s "
                           "(failure rate 62% over 40 calls, ejection 1 in a row)")


def test_a_return_is_one_info_line() -> None:
    (line,) = _logged(lambda log: log.on_returned(returned(ejected_for_s=30.0)))
    assert line["msg"] == "upstream payments: endpoint 10.0.0.1:50051 back in service after " \
                          "30.0 s ejected"
    assert line["level"] == "INFO"
    assert (line["event"], line["ejected_for_ms"]) == ("endpoint_returned", 30000)


def test_a_set_change_names_what_was_added_and_removed() -> None:
    (line,) = _logged(lambda log: log.on_endpoints_changed(
        change(added=(C,), removed=(A, B), count=1, source="file")))
    assert line["msg"] == ("upstream payments: 1 endpoint (file): added 10.0.0.3:50051; "
                           "removed 10.0.0.1:50051, 10.0.0.2:50051")
    assert line["level"] == "INFO"
    assert {k: line[k] for k in ("event", "added", "removed", "count", "source")} == {
        "event": "endpoints_changed", "added": [C], "removed": [A, B], "count": 1,
        "source": "file"}


def test_an_empty_set_is_a_warning_and_long_lists_are_shortened_in_the_message() -> None:
    many = tuple(f"10.1.0.{i}:50051" for i in range(25))
    empty, big = _logged(lambda log: (
        log.on_endpoints_changed(change(added=(), count=0, source="dns")),
        log.on_endpoints_changed(change(added=many, count=25, source="dns"))))
    assert empty["level"] == "WARNING"
    assert empty["msg"] == ("upstream payments: 0 endpoints (dns): no endpoints: calls fail "
                            "fast with UNAVAILABLE")
    assert big["msg"].endswith("10.1.0.9:50051 and 15 more")
    assert len(big["added"]) == 25


def test_a_real_balancer_logs_its_first_set_an_ejection_and_a_return() -> None:
    clock = FakeClock()

    def run(log: LoggingEndpointListener) -> None:
        upstream = balancer([log], clock, base_ejection_ms=2000)
        for _ in range(5):
            (a,) = [e for e in upstream.endpoints() if e.address == A]
            upstream.finish(a, upstream.start(a), failed=True)
        clock.advance(2.0)
        upstream.pick()

    assert [line["event"] for line in _logged(run)] == [
        "endpoints_changed", "endpoint_ejected", "endpoint_returned"]
