"""Envelope <-> record conversion refuses malformed events naming the field."""

from __future__ import annotations

import dataclasses

import pytest

from sidecar import chain
from sidecar.eventlog.event_protos import new_event_from_proto, to_proto
from sidecar.eventlog.port import InvalidEventError, validate_new_event
from sidecar.v1 import events_pb2
from tests.support.events import StreamFactory


def envelope() -> events_pb2.Event:
    return to_proto(StreamFactory("checkout", "pod-1").transition("payments"))


def test_filter_columns_come_from_the_payload() -> None:
    record = new_event_from_proto(envelope())

    assert (record.service, record.instance, record.upstream) == ("checkout", "pod-1", "payments")


def test_type_that_does_not_name_the_payload_is_refused() -> None:
    event = envelope()
    event.type = "ConfigApplied"

    with pytest.raises(InvalidEventError) as caught:
        new_event_from_proto(event)
    assert caught.value.field == "type"


def test_event_without_payload_is_refused() -> None:
    event = envelope()
    event.ClearField("breaker_transitioned")

    with pytest.raises(InvalidEventError) as caught:
        new_event_from_proto(event)
    assert caught.value.field == "payload"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_id", "0190ABCD-not-a-uuid"),
        ("trace_id", "not-hex"),
        ("stream", "billing/pod-1"),  # disagrees with the payload's service/instance
        ("version", 0),
        ("prev_hash", b"\x01"),
    ],
)
def test_malformed_field_is_refused_naming_it(field: str, value: object) -> None:
    event = envelope()
    setattr(event, field, value)
    event.hash = chain.proto_hash(event) if field != "prev_hash" else event.hash

    with pytest.raises(InvalidEventError) as caught:
        new_event_from_proto(event)
    assert caught.value.field == field


def test_unset_occurred_at_is_refused() -> None:
    event = envelope()
    event.ClearField("occurred_at")

    with pytest.raises(InvalidEventError) as caught:
        new_event_from_proto(event)
    assert caught.value.field == "occurred_at"


@pytest.mark.parametrize(
    ("occurred_at_ns", "reason"),
    [
        (0, "must be set (nanoseconds since the Unix epoch)"),
        (-1, "must be after 1970-01-01T00:00:00Z and no later than 2262-04-11T23:47:16.854775807Z"),
        (2**63, "got seconds=9223372036 nanos=854775808 (2262-04-11T23:47:16Z)"),
    ],
    ids=["unset", "before 1970", "after 2262"],
)
def test_stored_records_tell_an_unset_occurred_at_from_one_out_of_range(
    occurred_at_ns: int, reason: str
) -> None:
    record = dataclasses.replace(new_event_from_proto(envelope()), occurred_at_ns=occurred_at_ns)

    with pytest.raises(InvalidEventError) as caught:
        validate_new_event(record)

    assert caught.value.field == "occurred_at"
    assert reason in caught.value.problem
