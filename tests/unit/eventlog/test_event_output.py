"""How ``sidecar events query|tail`` print events: one readable table row per event type, and
enum values the proto does not define shown as UNKNOWN(n) in both outputs, never an error."""

from __future__ import annotations

import json

import pytest

from sidecar.eventlog.client import TABLE_HEADER, event_to_json, json_line, table_row
from sidecar.v1 import events_pb2
from tests.contract.endpoint_events import (
    ENDPOINT_A,
    ENDPOINT_B,
    ENDPOINT_C,
    endpoint_ejected,
    endpoint_returned,
    endpoints_changed,
)
from tests.support.events import StreamFactory, to_proto


def _detail(event: events_pb2.Event) -> str:
    row = table_row(event)
    assert row.split()[4] == event.type
    return row[TABLE_HEADER.index("DETAIL"):]


def test_endpoint_events_have_readable_table_rows() -> None:
    pod = StreamFactory("checkout", "pod-1")

    changed = _detail(to_proto(endpoints_changed(
        pod, added=[ENDPOINT_A, ENDPOINT_B], removed=[ENDPOINT_C], count=2, source="dns")))
    by_failures = _detail(to_proto(endpoint_ejected(pod, ejection_ms=60_000,
                                                    ejections_in_a_row=2)))
    by_rate = _detail(to_proto(endpoint_ejected(
        pod, endpoint=ENDPOINT_B, reason=events_pb2.EJECTION_REASON_FAILURE_RATE)))
    returned = _detail(to_proto(endpoint_returned(pod, ejected_for_ms=60_000)))

    assert changed == (
        "payments: 2 endpoints (+10.0.0.1:50051, +10.0.0.2:50051, -10.0.0.3:50051; dns)")
    assert by_failures == (
        "payments: 10.0.0.1:50051 ejected for 60000 ms (consecutive_failures: 5; 2 in a row)")
    assert by_rate == (
        "payments: 10.0.0.2:50051 ejected for 30000 ms (failure_rate: 62% of 8 calls; "
        "1 in a row)")
    assert returned == "payments: 10.0.0.1:50051 returned after 60000 ms"


def test_a_long_endpoint_list_is_cut_in_the_table() -> None:
    added = [f"10.0.1.{i}:80" for i in range(1, 8)]
    event = to_proto(endpoints_changed(StreamFactory(), added=added))

    assert _detail(event) == (
        "payments: 7 endpoints (+10.0.1.1:80, +10.0.1.2:80, +10.0.1.3:80, +4 more; endpoints)")


def test_endpoint_events_as_json_carry_the_payload_fields_by_name() -> None:
    event = to_proto(endpoint_ejected(StreamFactory("checkout", "pod-1")))

    payload = event_to_json(event)["payload"]

    assert payload["reason"] == "EJECTION_REASON_CONSECUTIVE_FAILURES"
    assert payload["endpoint"] == ENDPOINT_A
    assert payload["ejection_ms"] == "30000"  # uint64 as a string (proto3 JSON)


def _unknown(event: events_pb2.Event, **fields: int) -> events_pb2.Event:
    which = event.WhichOneof("payload")
    assert which is not None
    for name, value in fields.items():
        setattr(getattr(event, which), name, value)
    return event


@pytest.mark.parametrize(("make", "fields", "detail"), [
    (lambda p: p.transition("payments", "CLOSED", "OPEN"), {"to_state": 99, "mode": 7},
     "payments: CLOSED -> UNKNOWN(99) (failure_rate)"),
    (lambda p: p.mode_changed("payments"), {"from_mode": 5, "to_mode": -1},
     "payments: mode UNKNOWN(5) -> UNKNOWN(-1) (admin)"),
    (lambda p: endpoint_ejected(p), {"reason": 12},
     "payments: 10.0.0.1:50051 ejected for 30000 ms (UNKNOWN(12): 5 failures in a row, "
     "62% of 8 calls; 1 in a row)"),
], ids=["transition", "mode change", "ejection"])
def test_unknown_enum_values_print_as_unknown_in_table_and_json(
    make: object, fields: dict[str, int], detail: str
) -> None:
    event = _unknown(to_proto(make(StreamFactory("checkout", "pod-1"))), **fields)  # type: ignore[operator]

    payload = json.loads(json_line(event))["payload"]

    assert _detail(event) == detail
    for name, value in fields.items():
        assert payload[name] == f"UNKNOWN({value})"


@pytest.mark.parametrize("command", ["query", "tail"])
def test_the_type_option_names_every_event_type_in_its_help(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from sidecar.cli import main
    from sidecar.eventlog.api.validation import EVENT_TYPES

    with pytest.raises(SystemExit):
        main(["events", command, "--help"])

    text = " ".join(capsys.readouterr().out.split())
    assert all(event_type in text for event_type in EVENT_TYPES), text
