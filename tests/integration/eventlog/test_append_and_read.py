"""Append and read over gRPC against a real server process: idempotency, conflicts, chain checks,
field validation, filters and pagination."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import grpc
import pytest

from sidecar.v1 import eventlog_pb2, events_pb2
from tests.integration.eventlog._server import EventLogProcess
from tests.support.events import DEFAULT_START_NS, StreamFactory, rehash, to_proto

pytestmark = pytest.mark.integration

S = 1_000_000_000


def read_all(server: EventLogProcess, **kwargs: object) -> eventlog_pb2.ReadAllResponse:
    flt = kwargs.pop("filter", None)
    request = eventlog_pb2.ReadAllRequest(**kwargs)  # type: ignore[arg-type]
    if flt is not None:
        request.filter.CopyFrom(flt)  # type: ignore[arg-type]
    return server.stub.ReadAll(request, timeout=10.0)


def test_appended_events_read_back_by_stream_and_by_position(eventlog: EventLogProcess) -> None:
    producer = StreamFactory("readback", "pod-1")
    events = producer.transitions(5)

    reply = eventlog.append(events)
    positions = [r.global_position for r in reply.results]
    by_stream = eventlog.stub.ReadStream(
        eventlog_pb2.ReadStreamRequest(stream="readback/pod-1", from_version=2, limit=3)
    )
    by_position = read_all(eventlog, from_position=positions[0], limit=5)

    assert [r.version for r in reply.results] == [1, 2, 3, 4, 5]
    assert not any(r.duplicate for r in reply.results)
    assert positions == list(range(positions[0], positions[0] + 5))
    assert [e.version for e in by_stream.events] == [2, 3, 4]
    assert by_stream.next_version == 5
    assert [e.event_id for e in by_position.events] == [e.event_id for e in events]
    stored = by_position.events[0]
    assert stored.hash == events[0].hash and stored.prev_hash == events[0].prev_hash
    assert stored.breaker_transitioned.upstream == "payments"
    assert stored.recorded_at.seconds > 0


def test_retried_append_returns_original_positions_and_stores_nothing(
    eventlog: EventLogProcess,
) -> None:
    events = StreamFactory("retry", "pod-1").transitions(3)
    first = eventlog.append(events)
    head = eventlog.head()

    again = eventlog.append(events)

    assert [r.global_position for r in again.results] == [
        r.global_position for r in first.results
    ]
    assert all(r.duplicate for r in again.results)
    assert eventlog.head() == head


def test_different_event_at_a_taken_version_is_failed_precondition_naming_both(
    eventlog: EventLogProcess,
) -> None:
    eventlog.append(StreamFactory("conflict", "pod-1").transitions(2))
    rival = StreamFactory("conflict", "pod-1").transition()  # another producer's version 1
    head = eventlog.head()

    with pytest.raises(grpc.RpcError) as caught:
        eventlog.append([rival])

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = caught.value.details()
    assert "conflict" in details and "'conflict/pod-1'" in details
    assert "expected" in details and "actual" in details
    assert "version 2" in details  # the head the stream actually has
    assert eventlog.head() == head


def test_broken_hash_chain_is_refused(eventlog: EventLogProcess) -> None:
    producer = StreamFactory("chain", "pod-1")
    eventlog.append([producer.transition()])
    forged = rehash(producer.transition(), prev_hash=b"\x07" * 32)

    with pytest.raises(grpc.RpcError) as caught:
        eventlog.append([forged])

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "chain" in caught.value.details()


def test_a_batch_with_one_bad_event_stores_none_of_it(eventlog: EventLogProcess) -> None:
    producer = StreamFactory("atomic", "pod-1")
    good = producer.transitions(3)
    wrong_hash = dataclasses.replace(producer.transition(), hash=b"\x01" * 32)
    head = eventlog.head()

    with pytest.raises(grpc.RpcError) as caught:
        eventlog.append([*good, wrong_hash])

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert eventlog.head() == head
    stored = eventlog.stub.ReadStream(eventlog_pb2.ReadStreamRequest(stream="atomic/pod-1"))
    assert not stored.events


def _wire(mutate: Callable[[events_pb2.Event], None]) -> events_pb2.Event:
    event = to_proto(StreamFactory("malformed", "pod-1").transition())
    mutate(event)
    return event


MALFORMED: list[tuple[str, Callable[[events_pb2.Event], None], str]] = [
    ("event_id", lambda e: setattr(e, "event_id", "12345"), "events[0].event_id"),
    ("stream", lambda e: setattr(e, "stream", "no-slash"), "events[0].stream"),
    ("version", lambda e: setattr(e, "version", 0), "events[0].version"),
    ("type", lambda e: setattr(e, "type", "BreakerModeChanged"), "events[0].type"),
    ("payload", lambda e: e.ClearField("breaker_transitioned"), "events[0].payload"),
    ("occurred_at", lambda e: e.ClearField("occurred_at"), "events[0].occurred_at"),
    ("trace_id", lambda e: setattr(e, "trace_id", "xyz"), "events[0].trace_id"),
    ("prev_hash", lambda e: setattr(e, "prev_hash", b"short"), "events[0].prev_hash"),
    ("hash", lambda e: setattr(e, "hash", b""), "events[0].hash"),
    (
        "payload service",
        lambda e: setattr(e.breaker_transitioned, "service", "other"),
        "events[0].breaker_transitioned.service",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "field"), [(m, f) for _, m, f in MALFORMED], ids=[n for n, _, _ in MALFORMED]
)
def test_malformed_field_is_invalid_argument_naming_it_and_nothing_is_stored(
    eventlog: EventLogProcess, mutate: Callable[[events_pb2.Event], None], field: str
) -> None:
    head = eventlog.head()

    with pytest.raises(grpc.RpcError) as caught:
        eventlog.append([_wire(mutate)])

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(f"{field}: ")
    assert eventlog.head() == head


def test_empty_append_is_invalid_argument(eventlog: EventLogProcess) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        eventlog.stub.Append(eventlog_pb2.AppendRequest(), timeout=10.0)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("events: ")


def test_unknown_type_in_a_read_filter_is_invalid_argument(eventlog: EventLogProcess) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        read_all(eventlog, filter=eventlog_pb2.EventFilter(types=["Nope"]))

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("filter.types[0]: ")


def test_read_all_filters_by_service_instance_upstream_type_and_time(
    eventlog: EventLogProcess,
) -> None:
    t0 = DEFAULT_START_NS
    pod1 = StreamFactory("filters", "pod-1", start_ns=t0, step_ns=S)
    pod2 = StreamFactory("filters", "pod-2", start_ns=t0, step_ns=S)
    eventlog.append([
        pod1.config_applied(["payments", "stock"]),              # t0+1
        pod1.transition("payments", "CLOSED", "OPEN"),           # t0+2
        pod1.transition("stock", "CLOSED", "OPEN"),              # t0+3
        pod1.mode_changed("payments"),                           # t0+4
        pod2.transition("payments", "CLOSED", "OPEN"),           # t0+1
    ])

    def ids(**flt: object) -> list[tuple[str, int]]:
        time_range = {k: flt.pop(k) for k in ("from_ns", "to_ns") if k in flt}
        request_filter = eventlog_pb2.EventFilter(service="filters", **flt)  # type: ignore[arg-type]
        if "from_ns" in time_range:
            request_filter.from_time.FromNanoseconds(time_range["from_ns"])  # type: ignore[arg-type]
        if "to_ns" in time_range:
            request_filter.to_time.FromNanoseconds(time_range["to_ns"])  # type: ignore[arg-type]
        page = read_all(eventlog, filter=request_filter)
        return [(e.stream, e.version) for e in page.events]

    assert len(ids()) == 5
    assert ids(instance="pod-2") == [("filters/pod-2", 1)]
    assert ids(upstream="stock") == [("filters/pod-1", 3)]
    assert ids(upstream="payments", types=["BreakerTransitioned"]) == [
        ("filters/pod-1", 2),
        ("filters/pod-2", 1),
    ]
    assert ids(types=["ConfigApplied", "BreakerModeChanged"]) == [
        ("filters/pod-1", 1),
        ("filters/pod-1", 4),
    ]
    assert ids(instance="pod-1", from_ns=t0 + 2 * S, to_ns=t0 + 4 * S) == [
        ("filters/pod-1", 2),
        ("filters/pod-1", 3),
    ]


def test_paging_a_filtered_read_returns_every_match_exactly_once(
    eventlog: EventLogProcess,
) -> None:
    wanted, noise = StreamFactory("paging", "pod-1"), StreamFactory("paging-noise", "pod-1")
    expected: list[str] = []
    for _ in range(7):
        batch = wanted.transitions(3)
        expected += [e.event_id for e in batch]
        eventlog.append([*batch, *noise.transitions(4)])
    flt = eventlog_pb2.EventFilter(service="paging")

    seen: list[str] = []
    position, pages = 1, 0
    while True:
        page = read_all(eventlog, from_position=position, limit=4, filter=flt)
        pages += 1
        seen += [e.event_id for e in page.events]
        if not page.events:
            break
        assert page.next_position > position
        position = page.next_position
    assert seen == expected
    assert pages >= len(expected) // 4
    assert page.next_position == page.head_position + 1


def test_breaker_status_is_answered_from_projections(eventlog: EventLogProcess) -> None:
    t0 = DEFAULT_START_NS
    pod1 = StreamFactory("status", "pod-1", start_ns=t0, step_ns=S)
    pod2 = StreamFactory("status", "pod-2", start_ns=t0, step_ns=S)
    reply = eventlog.append([
        pod1.transition("payments", "CLOSED", "OPEN", at_ns=t0),
        pod1.transition("payments", "OPEN", "HALF_OPEN", at_ns=t0 + 10 * S),
        pod1.transition("payments", "HALF_OPEN", "CLOSED", at_ns=t0 + 12 * S),
        pod2.transition("payments", "CLOSED", "OPEN", at_ns=t0 + 5 * S),
    ])
    last = reply.results[-1].global_position
    status = _status_when_folded(eventlog, "status", "payments", last)

    assert status.state == events_pb2.BREAKER_STATE_OPEN
    assert (status.instances_open, status.instances_known) == (1, 2)
    assert status.transitions == 4
    assert status.recoveries == 1
    assert status.mean_time_to_recover_s == pytest.approx(12.0)
    assert status.open_since.ToNanoseconds() == t0 + 5 * S
    assert status.seconds_open > 10.0  # pod-1's 10 s plus pod-2's still running
    assert [i.instance for i in status.instances] == ["pod-1", "pod-2"]

    with pytest.raises(grpc.RpcError) as caught:
        eventlog.stub.GetBreakerStatus(
            eventlog_pb2.GetBreakerStatusRequest(service="status", upstream="nope")
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    listed = eventlog.stub.ListBreakerStatus(
        eventlog_pb2.ListBreakerStatusRequest(service="status")
    )
    assert [(b.service, b.upstream) for b in listed.breakers] == [("status", "payments")]
    assert listed.projection_position >= last


def _status_when_folded(
    server: EventLogProcess, service: str, upstream: str, position: int
) -> eventlog_pb2.UpstreamBreakerStatus:
    """GetBreakerStatus once the projections have folded ``position`` (they follow the log)."""
    import time

    deadline = time.monotonic() + 10.0
    while True:
        listed = server.stub.ListBreakerStatus(eventlog_pb2.ListBreakerStatusRequest())
        if listed.projection_position >= position:
            return server.stub.GetBreakerStatus(
                eventlog_pb2.GetBreakerStatusRequest(service=service, upstream=upstream)
            )
        assert time.monotonic() < deadline, "projections did not catch up"
        time.sleep(0.02)


def test_occurred_at_beyond_2262_is_refused_as_out_of_range_not_as_unset(
    eventlog: EventLogProcess,
) -> None:
    def year_2262(event: events_pb2.Event) -> None:
        event.occurred_at.seconds = 9_223_372_037

    with pytest.raises(grpc.RpcError) as caught:
        eventlog.append([_wire(year_2262)])

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(
        "events[0].occurred_at: must be after 1970-01-01T00:00:00Z and no later than "
        "2262-04-11T23:47:16.854775807Z"
    )
    assert "got seconds=9223372037" in caught.value.details()


def test_reads_bounded_beyond_64_bit_nanoseconds_or_positions_answer_empty_not_fail(
    eventlog: EventLogProcess,
) -> None:
    eventlog.append(StreamFactory("farbounds", "pod-1").transitions(1))
    year_9999 = eventlog_pb2.EventFilter(service="farbounds")
    year_9999.from_time.seconds = 253_402_300_799  # the Timestamp maximum

    far_time = read_all(eventlog, filter=year_9999)
    far_position = read_all(eventlog, from_position=2**64 - 1)

    assert list(far_time.events) == [] and list(far_position.events) == []
