"""Request validation: every malformed field is refused with an error that names it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sidecar import chain
from sidecar.eventlog.api.validation import (
    InvalidField,
    append_records,
    validate_append,
    validate_event,
    validate_filter,
)
from sidecar.eventlog.event_protos import new_event_from_proto
from sidecar.v1 import eventlog_pb2, events_pb2
from tests.support.events import StreamFactory, to_proto


def valid_event() -> events_pb2.Event:
    return to_proto(StreamFactory("checkout", "pod-1").transition("payments"))


def _set(field: str, value: object) -> Callable[[events_pb2.Event], None]:
    def mutate(event: events_pb2.Event) -> None:
        setattr(event, field, value)

    return mutate


def _clear(field: str) -> Callable[[events_pb2.Event], None]:
    return lambda event: event.ClearField(field)


def _payload_field(field: str, value: str) -> Callable[[events_pb2.Event], None]:
    return lambda event: setattr(event.breaker_transitioned, field, value)


MALFORMED: list[tuple[str, Callable[[events_pb2.Event], None], str]] = [
    ("event_id not a uuid", _set("event_id", "not-a-uuid"), "event.event_id"),
    ("event_id uppercase", _set("event_id", "01890A5D-AC96-774B-BCCE-B302099A8057"),
     "event.event_id"),
    ("event_id empty", _set("event_id", ""), "event.event_id"),
    ("stream without instance", _set("stream", "checkout"), "event.stream"),
    ("stream with empty part", _set("stream", "checkout/"), "event.stream"),
    ("stream with two slashes", _set("stream", "checkout/pod/1"), "event.stream"),
    ("stream with a space", _set("stream", "check out/pod-1"), "event.stream"),
    ("version zero", _set("version", 0), "event.version"),
    ("type of another payload", _set("type", "ConfigApplied"), "event.type"),
    ("type empty", _set("type", ""), "event.type"),
    ("no payload", _clear("breaker_transitioned"), "event.payload"),
    ("payload service differs from stream", _payload_field("service", "cart"),
     "event.breaker_transitioned.service"),
    ("payload instance differs from stream", _payload_field("instance", "pod-2"),
     "event.breaker_transitioned.instance"),
    ("transition without upstream", _payload_field("upstream", ""),
     "event.breaker_transitioned.upstream"),
    ("occurred_at unset", _clear("occurred_at"), "event.occurred_at"),
    ("occurred_at before 1970", lambda e: e.occurred_at.FromSeconds(-5), "event.occurred_at"),
    ("trace_id too short", _set("trace_id", "abc123"), "event.trace_id"),
    ("trace_id uppercase", _set("trace_id", "0AF7651916CD43DD8448EB211C80319C"),
     "event.trace_id"),
    ("trace_id all zero", _set("trace_id", "0" * 32), "event.trace_id"),
    ("prev_hash short", _set("prev_hash", b"\x00" * 31), "event.prev_hash"),
    ("hash long", _set("hash", b"\x01" * 33), "event.hash"),
    ("hash empty", _set("hash", b""), "event.hash"),
]


@pytest.mark.parametrize(
    ("mutate", "field"), [(m, f) for _, m, f in MALFORMED], ids=[name for name, _, _ in MALFORMED]
)
def test_malformed_event_field_is_refused_naming_the_field(
    mutate: Callable[[events_pb2.Event], None], field: str
) -> None:
    event = valid_event()
    mutate(event)

    with pytest.raises(InvalidField) as caught:
        validate_event(event)

    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_producer_made_events_of_every_type_pass_and_convert_to_the_same_records() -> None:
    producer = StreamFactory("checkout", "pod-1")
    events = [
        producer.config_applied(["payments", "stock"]),
        producer.transition("payments", "CLOSED", "OPEN"),
        producer.mode_changed("payments"),
    ]
    request = eventlog_pb2.AppendRequest(events=[to_proto(e) for e in events])

    records = append_records(request, max_batch_events=10)

    assert records == events
    assert records == [new_event_from_proto(e) for e in request.events]


def test_empty_trace_id_is_allowed() -> None:
    event = valid_event()
    event.trace_id = ""
    event.hash = chain.proto_hash(event)

    validate_event(event)


def test_batch_field_paths_carry_the_event_index() -> None:
    producer = StreamFactory("checkout", "pod-1")
    events = [to_proto(e) for e in producer.transitions(3)]
    events[2].trace_id = "nope"

    with pytest.raises(InvalidField) as caught:
        validate_append(eventlog_pb2.AppendRequest(events=events), max_batch_events=10)

    assert caught.value.field == "events[2].trace_id"


def test_empty_batch_is_refused() -> None:
    with pytest.raises(InvalidField, match=r"^events: must hold at least one event"):
        validate_append(eventlog_pb2.AppendRequest(), max_batch_events=10)


def test_batch_over_the_limit_is_refused_naming_the_limit() -> None:
    events = [to_proto(e) for e in StreamFactory().transitions(4)]

    with pytest.raises(InvalidField, match=r"^events: holds 4 events, more than the limit of 3"):
        validate_append(eventlog_pb2.AppendRequest(events=events), max_batch_events=3)


def test_same_event_twice_in_one_batch_is_refused() -> None:
    event = valid_event()

    with pytest.raises(InvalidField) as caught:
        validate_append(eventlog_pb2.AppendRequest(events=[event, event]), max_batch_events=10)

    assert caught.value.field == "events[1].event_id"


def test_two_events_claiming_one_version_in_a_batch_are_refused() -> None:
    first = to_proto(StreamFactory("checkout", "pod-1").transition())
    rival = to_proto(StreamFactory("checkout", "pod-1").transition())

    with pytest.raises(InvalidField) as caught:
        validate_append(eventlog_pb2.AppendRequest(events=[first, rival]), max_batch_events=10)

    assert caught.value.field == "events[1].version"


@pytest.mark.parametrize(
    ("flt", "field"),
    [
        (eventlog_pb2.EventFilter(types=["BreakerExploded"]), "filter.types[0]"),
        (eventlog_pb2.EventFilter(service="check out"), "filter.service"),
        (eventlog_pb2.EventFilter(instance="a/b"), "filter.instance"),
        (eventlog_pb2.EventFilter(upstream="u" * 300), "filter.upstream"),
    ],
    ids=["unknown type", "service with space", "instance with slash", "upstream too long"],
)
def test_malformed_filter_is_refused_naming_the_field(
    flt: eventlog_pb2.EventFilter, field: str
) -> None:
    with pytest.raises(InvalidField) as caught:
        validate_filter(flt)

    assert caught.value.field == field


def test_time_range_must_run_forward() -> None:
    flt = eventlog_pb2.EventFilter()
    flt.from_time.FromSeconds(2000)
    flt.to_time.FromSeconds(1000)

    with pytest.raises(InvalidField) as caught:
        validate_filter(flt)

    assert caught.value.field == "filter.to_time"


def _occurred_at(seconds: int, nanos: int) -> events_pb2.Event:
    event = valid_event()
    event.occurred_at.seconds, event.occurred_at.nanos = seconds, nanos
    if -(2**63) <= seconds * 1_000_000_000 + nanos < 2**63:  # else the chain cannot hash it
        event.hash = chain.proto_hash(event)
    return event


@pytest.mark.parametrize(
    ("seconds", "nanos", "got"),
    [
        (-1, 0, "got seconds=-1 nanos=0 (1969-12-31T23:59:59Z)"),
        (0, 0, "got seconds=0 nanos=0 (1970-01-01T00:00:00Z)"),
        (9_223_372_036, 854_775_808, "got seconds=9223372036 nanos=854775808 (2262-04-11"),
        (9_223_372_037, 0, "got seconds=9223372037 nanos=0 (2262-04-11T23:47:17Z)"),
        (-62_135_596_800, 0, "(0001-01-01T00:00:00Z)"),
        (2**62, 0, "got seconds=4611686018427387904 nanos=0"),
    ],
)
def test_occurred_at_outside_64_bit_nanoseconds_is_refused_as_out_of_range_not_as_unset(
    seconds: int, nanos: int, got: str
) -> None:
    with pytest.raises(InvalidField) as caught:
        validate_event(_occurred_at(seconds, nanos))

    assert caught.value.field == "event.occurred_at"
    assert caught.value.problem.startswith(
        "must be after 1970-01-01T00:00:00Z and no later than 2262-04-11T23:47:16.854775807Z"
    )
    assert got in caught.value.problem
    assert "must be set" not in caught.value.problem


def test_unset_occurred_at_is_refused_as_unset() -> None:
    event = valid_event()
    event.ClearField("occurred_at")

    with pytest.raises(InvalidField) as caught:
        validate_event(event)

    assert caught.value.field == "event.occurred_at"
    assert caught.value.problem.startswith("must be set")


@pytest.mark.parametrize(
    ("seconds", "nanos"), [(0, 1), (9_223_372_036, 854_775_807)], ids=["first", "last"]
)
def test_occurred_at_at_either_end_of_the_range_is_accepted(seconds: int, nanos: int) -> None:
    record = append_records(
        eventlog_pb2.AppendRequest(events=[_occurred_at(seconds, nanos)]), max_batch_events=1
    )[0]

    assert record.occurred_at_ns == seconds * 1_000_000_000 + nanos
