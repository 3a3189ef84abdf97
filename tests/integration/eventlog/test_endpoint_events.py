"""Endpoint events through a real ``sidecar eventlog serve``: appended, filtered by type, shown
by ``sidecar events query|tail``, projected into /metrics; bad ones refused. And a log holding
enum values the proto does not define (written straight into the store, as one stored before
Append checked them): every reader shows them as UNKNOWN(n) and counts them, none fails."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from sidecar import chain
from sidecar.eventlog.sqlite.store import SqliteEventStore
from sidecar.v1 import eventlog_pb2, events_pb2
from tests.contract.endpoint_events import (
    ENDPOINT_A,
    ENDPOINT_B,
    endpoint_ejected,
    endpoint_events,
    unknown_enum_log,
)
from tests.integration.eventlog._server import EventLogProcess
from tests.integration.eventlog.test_observability import sample, scrape
from tests.support.events import StreamFactory, to_proto
from tests.support.procs import SIDECAR_BIN, ManagedProcess

pytestmark = pytest.mark.integration


def sidecar(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SIDECAR_BIN, *args], capture_output=True, text=True, timeout=60)


def _wait_folded(server: EventLogProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    head = server.head()
    deadline = time.monotonic() + 15
    while True:
        samples = scrape(server)
        if sample(samples, "eventlog_projection_position") == head:
            return samples
        assert time.monotonic() < deadline, f"projections stuck below {head}"
        time.sleep(0.05)


def test_endpoint_events_are_stored_filtered_by_type_and_printed(
    eventlog: EventLogProcess,
) -> None:
    pod = StreamFactory("cliendpoints", "pod-1")
    eventlog.append([pod.config_applied(["payments"]), *endpoint_events(pod)])

    as_json = sidecar("events", "query", "--eventlog", eventlog.address,
                      "--service", "cliendpoints", "--type", "EndpointEjected",
                      "--type", "EndpointReturned", "--output", "json")
    table = sidecar("events", "query", "--eventlog", eventlog.address,
                    "--service", "cliendpoints", "--upstream", "payments", "--output", "table")

    assert as_json.returncode == 0, as_json.stderr
    lines = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [e["type"] for e in lines] == ["EndpointEjected", "EndpointReturned",
                                          "EndpointEjected"]
    assert lines[0]["payload"]["endpoint"] == ENDPOINT_A
    assert lines[2]["payload"]["reason"] == "EJECTION_REASON_FAILURE_RATE"
    assert table.returncode == 0, table.stderr
    _header, *rows = table.stdout.splitlines()
    assert [row.split()[4] for row in rows] == [
        "EndpointsChanged", "EndpointEjected", "EndpointReturned", "EndpointEjected"]
    assert f"payments: 2 endpoints (+{ENDPOINT_A}, +{ENDPOINT_B}; endpoints)" in rows[0]
    assert f"payments: {ENDPOINT_A} ejected for 30000 ms (consecutive_failures: 5" in rows[1]
    assert f"payments: {ENDPOINT_A} returned after 30000 ms" in rows[2]
    assert "(failure_rate: 62% of 8 calls; 1 in a row)" in rows[3]

    samples = _wait_folded(eventlog)
    pair = {"service": "cliendpoints", "upstream": "payments"}
    assert sample(samples, "eventlog_endpoint_ejections_total", **pair) == 2
    assert sample(samples, "eventlog_endpoints_ejected", **pair) == 1
    assert sample(samples, "eventlog_events_appended_total", type="EndpointsChanged") is not None


def test_an_event_with_an_unknown_enum_value_is_refused_naming_field_and_value(
    eventlog: EventLogProcess,
) -> None:
    event = to_proto(endpoint_ejected(StreamFactory("cliendpoints", "pod-bad")))
    event.endpoint_ejected.reason = 99  # type: ignore[assignment]
    event.hash = chain.proto_hash(event)
    head = eventlog.head()

    with pytest.raises(grpc.RpcError) as caught:
        eventlog.append([event])

    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(
        "events[0].endpoint_ejected.reason: unknown enum value 99")
    assert eventlog.head() == head


@pytest.fixture
def unknown_log(tmp_path: Path) -> EventLogProcess:
    """A server on a store that already holds events with unknown enum values."""

    async def write() -> None:
        store = SqliteEventStore(tmp_path / "events.db")
        try:
            await store.append(unknown_enum_log(StreamFactory("legacy", "pod-1")))
        finally:
            await store.close()

    asyncio.run(write())
    return EventLogProcess(tmp_path)


def test_readers_show_stored_unknown_enum_values_as_unknown_and_count_them(
    unknown_log: EventLogProcess, tmp_path: Path,
) -> None:
    with unknown_log as server:
        as_json = sidecar("events", "query", "--eventlog", server.address, "--output", "json")
        table = sidecar("events", "query", "--eventlog", server.address, "--output", "table")
        with ManagedProcess([SIDECAR_BIN, "events", "tail", "--eventlog", server.address,
                             "--from-position", "1", "--count", "5", "--output", "table"],
                            tmp_path / "tail.log") as tail:
            tail_code = tail.wait(30)
            tail_output = tail.output()
        status = server.stub.ListBreakerStatus(eventlog_pb2.ListBreakerStatusRequest(),
                                               timeout=10)
        samples = _wait_folded(server)
        server_output = server.output()

    assert as_json.returncode == 0, as_json.stderr
    payloads = [json.loads(line)["payload"] for line in as_json.stdout.splitlines()]
    assert payloads[1]["to_state"] == "UNKNOWN(99)"
    assert (payloads[2]["from_state"], payloads[2]["mode"]) == ("UNKNOWN(99)", "UNKNOWN(42)")
    assert payloads[3]["to_mode"] == "UNKNOWN(-7)"
    assert payloads[4]["reason"] == "UNKNOWN(12)"
    assert table.returncode == 0, table.stderr
    for text in (table.stdout, tail_output):
        assert "payments: CLOSED -> UNKNOWN(99)" in text
        assert "payments: UNKNOWN(99) -> HALF_OPEN" in text
        assert "payments: mode ENFORCE -> UNKNOWN(-7) (admin)" in text
        assert "(UNKNOWN(12): 5 failures in a row" in text
    assert tail_code == 0, tail_output
    assert "Traceback" not in table.stderr + tail_output + server_output

    (breaker,) = status.breakers
    assert breaker.state == events_pb2.BREAKER_STATE_HALF_OPEN
    assert sorted((c.from_state, c.to_state, c.count) for c in breaker.transition_counts) == [
        (events_pb2.BREAKER_STATE_UNSPECIFIED, events_pb2.BREAKER_STATE_HALF_OPEN, 1),
        (events_pb2.BREAKER_STATE_CLOSED, events_pb2.BREAKER_STATE_UNSPECIFIED, 1),
    ]
    assert sample(samples, "eventlog_breaker_transitions_total", service="legacy",
                  upstream="payments", from_state="closed", to_state="unknown(99)") == 1
    for field, count in (("breaker_transitioned.to_state", 1),
                         ("breaker_transitioned.from_state", 1),
                         ("breaker_transitioned.mode", 1), ("breaker_mode_changed.to_mode", 1),
                         ("breaker_mode_changed.from_mode", 0), ("endpoint_ejected.reason", 1)):
        assert sample(samples, "eventlog_unknown_values_total", field=field) == count, field
    assert sample(samples, "eventlog_endpoint_ejections_total", service="legacy",
                  upstream="payments") == 1


def test_verify_and_rebuild_pass_over_stored_unknown_enum_values(
    unknown_log: EventLogProcess,
) -> None:
    unknown_log.close()

    verified = sidecar("eventlog", "verify", "--store", unknown_log.store_url)
    rebuilt = sidecar("eventlog", "rebuild", "--store", unknown_log.store_url)

    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "up to position 5: 5 events" in rebuilt.stdout
