"""Payload checks on Append: the endpoint events, and every enum field of every payload."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sidecar import chain
from sidecar.eventlog.api.payload_checks import MAX_DURATION_MS, check_endpoint
from sidecar.eventlog.api.validation import (
    EVENT_TYPES,
    InvalidField,
    append_records,
    validate_event,
    validate_filter,
)
from sidecar.eventlog.enums import event_enum_fields
from sidecar.eventlog.event_protos import PAYLOAD_KINDS, new_event_from_proto
from sidecar.v1 import eventlog_pb2, events_pb2
from tests.contract.endpoint_events import (
    ENDPOINT_A,
    ENDPOINT_B,
    endpoint_ejected,
    endpoint_events,
    endpoint_returned,
    endpoints_changed,
)
from tests.support.events import StreamFactory, to_proto

Mutation = Callable[[events_pb2.Event], None]


def _refused(event: events_pb2.Event, rehash: bool = True) -> InvalidField:
    if rehash:
        event.hash = chain.proto_hash(event)
    with pytest.raises(InvalidField) as caught:
        validate_event(event)
    return caught.value


def test_every_payload_of_the_proto_is_an_event_type_and_a_filter_type() -> None:
    oneof = events_pb2.Event.DESCRIPTOR.oneofs_by_name["payload"]

    assert {f.message_type.name for f in oneof.fields} == EVENT_TYPES == set(PAYLOAD_KINDS)
    assert {"EndpointsChanged", "EndpointEjected", "EndpointReturned"} <= EVENT_TYPES
    validate_filter(eventlog_pb2.EventFilter(types=sorted(EVENT_TYPES)))


def test_endpoint_events_pass_and_convert_to_the_records_the_producer_made() -> None:
    producer = StreamFactory("checkout", "pod-1")
    events = endpoint_events(producer)
    request = eventlog_pb2.AppendRequest(events=[to_proto(e) for e in events])

    records = append_records(request, max_batch_events=10)

    assert records == events
    assert records == [new_event_from_proto(e) for e in request.events]
    assert {r.upstream for r in records} == {"payments"}
    assert [r.type for r in records] == [
        "EndpointsChanged", "EndpointEjected", "EndpointReturned", "EndpointEjected"]


def _changed(**fields: Any) -> events_pb2.Event:
    event = to_proto(endpoints_changed(StreamFactory("checkout", "pod-1")))
    for name, value in fields.items():
        field = getattr(event.endpoints_changed, name)
        if isinstance(value, list):
            del field[:]
            field.extend(value)
        else:
            setattr(event.endpoints_changed, name, value)
    return event


def _ejected(**fields: Any) -> events_pb2.Event:
    event = to_proto(endpoint_ejected(StreamFactory("checkout", "pod-1")))
    for name, value in fields.items():
        setattr(event.endpoint_ejected, name, value)
    return event


def _returned(**fields: Any) -> events_pb2.Event:
    event = to_proto(endpoint_returned(StreamFactory("checkout", "pod-1")))
    for name, value in fields.items():
        setattr(event.endpoint_returned, name, value)
    return event


MALFORMED: list[tuple[str, Callable[[], events_pb2.Event], str, str]] = [
    ("changed: no upstream", lambda: _changed(upstream=""),
     "event.endpoints_changed.upstream", "must not be empty"),
    ("changed: upstream too long", lambda: _changed(upstream="u" * 300),
     "event.endpoints_changed.upstream", "300 characters"),
    ("changed: service not the stream's", lambda: _changed(service="cart"),
     "event.endpoints_changed.service", "differs from the stream's service"),
    ("changed: instance not the stream's", lambda: _changed(instance="pod-2"),
     "event.endpoints_changed.instance", "differs from the stream's instance"),
    ("changed: added without a port", lambda: _changed(added=["10.0.0.1"], count=1),
     "event.endpoints_changed.added[0]", "must be HOST:PORT"),
    ("changed: removed with port 0", lambda: _changed(removed=["10.0.0.9:0"]),
     "event.endpoints_changed.removed[0]", "must be HOST:PORT"),
    ("changed: added twice", lambda: _changed(added=[ENDPOINT_A, ENDPOINT_A], count=2),
     "event.endpoints_changed.added[1]", "already at [0]"),
    ("changed: added and removed", lambda: _changed(removed=[ENDPOINT_B]),
     "event.endpoints_changed.removed[0]", "is also added"),
    ("changed: count below the added", lambda: _changed(count=1),
     "event.endpoints_changed.count", "at least the 2 added"),
    ("changed: count absurd", lambda: _changed(count=2**32 - 1),
     "event.endpoints_changed.count", "at most 65536"),
    ("changed: source too long", lambda: _changed(source="s" * 300),
     "event.endpoints_changed.source", "300 characters"),
    ("ejected: no upstream", lambda: _ejected(upstream=""),
     "event.endpoint_ejected.upstream", "must not be empty"),
    ("ejected: endpoint empty", lambda: _ejected(endpoint=""),
     "event.endpoint_ejected.endpoint", "must be HOST:PORT"),
    ("ejected: endpoint with a space", lambda: _ejected(endpoint="10.0.0 1:80"),
     "event.endpoint_ejected.endpoint", "must be HOST:PORT"),
    ("ejected: port too big", lambda: _ejected(endpoint="10.0.0.1:65536"),
     "event.endpoint_ejected.endpoint", "must be HOST:PORT"),
    ("ejected: reason unspecified", lambda: _ejected(reason=0),
     "event.endpoint_ejected.reason", "must be set"),
    ("ejected: reason out of range", lambda: _ejected(reason=99),
     "event.endpoint_ejected.reason", "unknown enum value 99"),
    ("ejected: ejection_ms absurd", lambda: _ejected(ejection_ms=2**64 - 1),
     "event.endpoint_ejected.ejection_ms", "more than a year"),
    ("ejected: no ejection in a row", lambda: _ejected(ejections_in_a_row=0),
     "event.endpoint_ejected.ejections_in_a_row", "must be >= 1"),
    ("ejected: failure rate above 1", lambda: _ejected(failure_rate=1.5),
     "event.endpoint_ejected.failure_rate", "must be in [0, 1]"),
    ("ejected: failure rate NaN", lambda: _ejected(failure_rate=float("nan")),
     "event.endpoint_ejected.failure_rate", "must be in [0, 1]"),
    ("ejected: failure-rate ejection without calls",
     lambda: _ejected(reason=events_pb2.EJECTION_REASON_FAILURE_RATE, calls=0),
     "event.endpoint_ejected.calls", "FAILURE_RATE"),
    ("ejected: consecutive-failures ejection without failures",
     lambda: _ejected(consecutive_failures=0),
     "event.endpoint_ejected.consecutive_failures", "CONSECUTIVE_FAILURES"),
    ("returned: no upstream", lambda: _returned(upstream=""),
     "event.endpoint_returned.upstream", "must not be empty"),
    ("returned: endpoint not HOST:PORT", lambda: _returned(endpoint="payments"),
     "event.endpoint_returned.endpoint", "must be HOST:PORT"),
    ("returned: ejected_for_ms absurd", lambda: _returned(ejected_for_ms=MAX_DURATION_MS + 1),
     "event.endpoint_returned.ejected_for_ms", "more than a year"),
    ("returned: type of another payload", lambda: _set_type(_returned(), "EndpointEjected"),
     "event.type", "must be 'EndpointReturned'"),
]


def _set_type(event: events_pb2.Event, event_type: str) -> events_pb2.Event:
    event.type = event_type
    return event


@pytest.mark.parametrize(("make", "field", "problem"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_malformed_endpoint_event_is_refused_naming_the_field(
    make: Callable[[], events_pb2.Event], field: str, problem: str
) -> None:
    refused = _refused(make())

    assert refused.field == field
    assert problem in refused.problem


@pytest.mark.parametrize("endpoint", [
    "10.0.0.1:1", "payments-0.payments.shop.svc.cluster.local:50051", "[::1]:8080",
    "[fe80::1%eth0]:443", "::1:65535", "localhost:65535",
])
def test_endpoints_as_the_config_writes_them_are_accepted(endpoint: str) -> None:
    event = _ejected(endpoint=endpoint)
    event.hash = chain.proto_hash(event)

    check_endpoint(endpoint, "endpoint")
    validate_event(event)


@pytest.mark.parametrize("endpoint", [
    "", ":80", "host:", "host:port", "host:08x", "host:123456", "a/b:80", "host:+80", "ho st:1",
    "host:٣", "h" * 300 + ":80",
])
def test_endpoints_that_are_not_host_port_are_refused(endpoint: str) -> None:
    with pytest.raises(InvalidField, match="must be HOST:PORT"):
        check_endpoint(endpoint, "endpoint")


# --- enum values the proto does not define ----------------------------------------------------


def _transition() -> events_pb2.Event:
    return to_proto(StreamFactory("checkout", "pod-1").transition("payments"))


def _mode_changed() -> events_pb2.Event:
    return to_proto(StreamFactory("checkout", "pod-1").mode_changed("payments"))


def _set_enum(make: Callable[[], events_pb2.Event], oneof: str, name: str,
              value: int) -> events_pb2.Event:
    event = make()
    setattr(getattr(event, oneof), name, value)
    return event


_MAKERS: dict[str, Callable[[], events_pb2.Event]] = {
    "breaker_transitioned": _transition,
    "breaker_mode_changed": _mode_changed,
    "endpoint_ejected": _ejected,
}


def test_the_enum_fields_are_found_in_the_descriptors_of_every_payload() -> None:
    assert event_enum_fields() == (
        "breaker_mode_changed.from_mode", "breaker_mode_changed.to_mode",
        "breaker_transitioned.from_state", "breaker_transitioned.mode",
        "breaker_transitioned.to_state", "endpoint_ejected.reason",
    )


@pytest.mark.parametrize("path", event_enum_fields())
@pytest.mark.parametrize("value", [99, 5, -1, 2**31 - 1, -(2**31)])
def test_an_enum_value_the_proto_does_not_define_is_refused_naming_field_and_value(
    path: str, value: int
) -> None:
    oneof, name = path.split(".")
    event = _set_enum(_MAKERS[oneof], oneof, name, value)

    refused = _refused(event)

    assert refused.field == f"event.{path}"
    assert refused.problem.startswith(f"unknown enum value {value} ")
    assert str(refused).startswith(f"event.{path}: unknown enum value {value}")


@pytest.mark.parametrize("path", event_enum_fields())
def test_every_value_the_proto_defines_is_accepted(path: str) -> None:
    oneof, name = path.split(".")
    descriptor = events_pb2.Event.DESCRIPTOR.fields_by_name[oneof].message_type
    enum = descriptor.fields_by_name[name].enum_type
    for value in enum.values_by_number:
        if oneof == "endpoint_ejected" and value == 0:
            continue  # an ejection must say why (its own check)
        event = _set_enum(_MAKERS[oneof], oneof, name, value)
        if oneof == "endpoint_ejected":
            event.endpoint_ejected.calls = 8
        event.hash = chain.proto_hash(event)
        validate_event(event)


def test_an_unknown_enum_value_in_a_batch_names_the_event_index() -> None:
    producer = StreamFactory("checkout", "pod-1")
    events = [to_proto(e) for e in producer.transitions(3)]
    events[1].breaker_transitioned.to_state = 99  # type: ignore[assignment]
    events[1].hash = chain.proto_hash(events[1])

    with pytest.raises(InvalidField) as caught:
        append_records(eventlog_pb2.AppendRequest(events=events), max_batch_events=10)

    assert str(caught.value).startswith(
        "events[1].breaker_transitioned.to_state: unknown enum value 99")
