"""Bad input to every RPC of sidecar.v1.EventLog, on a real ``sidecar eventlog serve`` process.

Two kinds: bytes that are not a valid protobuf message at all (sent through a raw-bytes channel,
so the client library cannot refuse them first), and valid messages with bad contents (built
from the generated classes: out-of-range numbers, broken ids, one field of a valid event of any
payload type changed, with and without its hash recomputed). Each call must end with a clear
status in seconds; afterwards the server still runs and answers SERVING, it logged no traceback,
it stored exactly the events it acknowledged and nothing else, and the audit passes.

Enum values: an event carrying a value its proto does not define (set on purpose in every
payload that has enums, or by a random number in any field) must be refused with
INVALID_ARGUMENT, and no acknowledged or stored event may carry one. The check is this file's
own walk of the message (``_undefined_enums``), not the server's.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar import chain
from sidecar.eventlog.api.validation import validate_event
from sidecar.eventlog.port import NewEvent
from sidecar.v1 import eventlog_pb2, events_pb2
from tests.contract.endpoint_events import endpoint_ejected, endpoint_returned, endpoints_changed
from tests.contract.resilience_events import load_shedding, log_rollback_detected
from tests.fuzz._checks import CALL_TIMEOUT_S, ServerUnderFuzz, assert_clear_refusal
from tests.integration.eventlog._server import EventLogProcess
from tests.support.events import StreamFactory, to_proto

pytestmark = pytest.mark.integration

SERVICE = "sidecar.v1.EventLog"
REQUESTS: dict[str, Any] = {
    "Append": eventlog_pb2.AppendRequest,
    "ReadStream": eventlog_pb2.ReadStreamRequest,
    "ReadAll": eventlog_pb2.ReadAllRequest,
    "Subscribe": eventlog_pb2.SubscribeRequest,
    "GetBreakerStatus": eventlog_pb2.GetBreakerStatusRequest,
    "ListBreakerStatus": eventlog_pb2.ListBreakerStatusRequest,
    "Verify": eventlog_pb2.VerifyRequest,
}
SUBSCRIBE_WATCH_S = 1.0
"""A decodable Subscribe is a live stream: watch it this long for a first answer."""

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_fresh = itertools.count(1)
_ids = itertools.count(1)


MAKERS: dict[str, Callable[[StreamFactory], NewEvent]] = {
    "breaker_transitioned": lambda p: p.transition(),
    "breaker_mode_changed": lambda p: p.mode_changed(),
    "config_applied": lambda p: p.config_applied(["payments", "stock"]),
    "endpoints_changed": lambda p: endpoints_changed(p),
    "endpoint_ejected": lambda p: endpoint_ejected(p),
    "endpoint_returned": lambda p: endpoint_returned(p),
    "load_shedding": lambda p: load_shedding(p),
    "log_rollback_detected": lambda p: log_rollback_detected(p),
}
"""A valid first event of a fresh stream, per payload (oneof field of ``Event.payload``)."""
WITH_ENUMS = sorted(
    kind for kind in MAKERS
    if any(f.type == FieldDescriptor.TYPE_ENUM
           for f in events_pb2.Event.DESCRIPTOR.fields_by_name[kind].message_type.fields)
)


def _valid_event(kind: str = "breaker_transitioned") -> events_pb2.Event:
    producer = StreamFactory("fuzz", f"pod-{next(_fresh)}")
    event: events_pb2.Event = to_proto(MAKERS[kind](producer))
    return event


def _undefined_enums(message: Message, path: str = "") -> list[str]:
    """``"field=value"`` for every enum value set in ``message`` (nested ones included) that
    its enum type does not define. This test's own oracle: the server's walk is not used."""
    found: list[str] = []
    for field, value in message.ListFields():
        values = list(value) if field.is_repeated else [value]
        if field.type == FieldDescriptor.TYPE_ENUM:
            found += [f"{path}{field.name}={v}" for v in values
                      if field.enum_type.values_by_number.get(v) is None]
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in values:
                found += _undefined_enums(item, f"{path}{field.name}.")
    return found


def test_the_fuzz_makes_every_payload_of_the_proto() -> None:
    oneof = events_pb2.Event.DESCRIPTOR.oneofs_by_name["payload"]
    assert sorted(MAKERS) == sorted(f.name for f in oneof.fields)
    assert WITH_ENUMS == ["breaker_mode_changed", "breaker_transitioned", "endpoint_ejected"]
    for kind in MAKERS:
        event = _valid_event(kind)
        validate_event(event)
        assert _undefined_enums(event) == []


def _decodes(method: str, payload: bytes) -> bool:
    try:
        REQUESTS[method].FromString(payload)
    except Exception:
        return False
    return True


class Outcome:
    """Status of one fuzz call (``OK`` or an error), and the Append results when OK."""

    def __init__(self, code: grpc.StatusCode, error: grpc.RpcError | None = None,
                 stored: int = 0) -> None:
        self.code = code
        self.error = error
        self.stored = stored


def _call_raw(eventlog: EventLogProcess, method: str, payload: bytes) -> Outcome:
    path = f"/{SERVICE}/{method}"
    try:
        if method == "Subscribe":
            stream = eventlog.channel.unary_stream(path)(payload, timeout=SUBSCRIBE_WATCH_S)
            next(iter(stream), None)
            stream.cancel()
            return Outcome(grpc.StatusCode.OK)
        reply = eventlog.channel.unary_unary(path)(payload, timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as error:
        return Outcome(error.code(), error)
    stored = 0
    if method == "Append":
        results = eventlog_pb2.AppendResponse.FromString(reply).results
        stored = sum(1 for r in results if not r.duplicate)
    return Outcome(grpc.StatusCode.OK, stored=stored)


def _check(method: str, payload: bytes, outcome: Outcome) -> None:
    what = f"{method}({payload[:40]!r}...)"
    if not _decodes(method, payload):
        assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT, (
            f"{what}: undecodable bytes got {outcome.code.name}: "
            f"{outcome.error.details() if outcome.error else ''}")
        return
    if outcome.error is None:
        return
    if method == "Subscribe" and outcome.code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return  # a valid subscription that is waiting for events, cancelled by the watch
    assert_clear_refusal(outcome.error, what)


def _near_valid_bytes() -> st.SearchStrategy[bytes]:
    """A valid request's bytes, then truncated, with bytes flipped, or with junk spliced in."""
    def build(method: str, cut: int, flips: list[tuple[int, int]], junk: bytes) -> bytes:
        if method == "Append":
            message: Any = eventlog_pb2.AppendRequest(events=[_valid_event()])
        elif method in ("ReadStream",):
            message = eventlog_pb2.ReadStreamRequest(stream="fuzz/pod-1", from_version=1)
        else:
            message = eventlog_pb2.ReadAllRequest(
                from_position=1, limit=10, filter=eventlog_pb2.EventFilter(service="fuzz"))
        data = bytearray(message.SerializeToString())
        for index, value in flips:
            data[index % len(data)] = value
        spliced = bytes(data[: cut % (len(data) + 1)]) + junk + bytes(data[cut % (len(data) + 1):])
        return spliced

    return st.builds(
        build,
        st.sampled_from(["Append", "ReadStream", "ReadAll"]),
        st.integers(0, 10_000),
        st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
        st.binary(max_size=16),
    )


def _head_and_verify(eventlog: EventLogProcess) -> tuple[int, bool]:
    reply = eventlog.stub.Verify(eventlog_pb2.VerifyRequest(), timeout=30,
                                 metadata=eventlog.metadata())
    return eventlog.head(), bool(reply.ok)


def _assert_stored_events_are_valid(eventlog: EventLogProcess, after: int) -> Counter[str]:
    """Every event stored after position ``after`` is valid, enum values included; returns
    how many of each type there are."""
    page = eventlog.stub.ReadAll(eventlog_pb2.ReadAllRequest(from_position=after + 1),
                                 timeout=30, metadata=eventlog.metadata())
    types: Counter[str] = Counter()
    for event in page.events:
        validate_event(event)  # raises InvalidField for anything malformed that got in
        assert _undefined_enums(event) == [], f"stored with an unknown enum value: {event}"
        assert chain.proto_hash(event) == event.hash
        types[event.type] += 1
    return types


def test_random_and_corrupted_bytes_to_every_eventlog_rpc_get_a_clear_status(
        eventlog: EventLogProcess, eventlog_server: ServerUnderFuzz) -> None:
    head_before, _ = _head_and_verify(eventlog)
    codes: Counter[str] = Counter()
    stored = 0
    started = time.monotonic()

    @FUZZ
    @given(method=st.sampled_from(sorted(REQUESTS)),
           payload=st.binary(max_size=512) | _near_valid_bytes())
    def fuzz(method: str, payload: bytes) -> None:
        nonlocal stored
        outcome = _call_raw(eventlog, method, payload)
        codes[outcome.code.name] += 1
        stored += outcome.stored
        _check(method, payload, outcome)

    fuzz()
    head_after, ok = _head_and_verify(eventlog)
    print(f"\nFUZZ eventlog raw bytes: {sum(codes.values())} calls in "
          f"{time.monotonic() - started:.1f} s, {dict(codes)}, stored {stored}")
    assert ok, "verify failed after the fuzz run"
    assert head_after - head_before == stored
    assert codes["INVALID_ARGUMENT"] > 0
    _assert_stored_events_are_valid(eventlog, head_before)
    eventlog_server.assert_alive_and_serving()
    eventlog_server.assert_no_traceback_logged()


# --- valid protobuf, bad contents ---------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8"), max_size=300)
_u64 = st.integers(0, 2**64 - 1)
_u32 = st.integers(0, 2**32 - 1)
_i64 = st.integers(-(2**63), 2**63 - 1)
_nanos = st.integers(-(2**31), 2**31 - 1)
_enum = st.integers(-(2**31), 2**31 - 1)
BOUNDARY_SECONDS = (
    253_402_300_799, 253_402_300_800, -62_135_596_800, -62_135_596_801,  # years 0001 / 9999
    9_223_372_036, 9_223_372_037, -9_223_372_036, -9_223_372_037,  # nanoseconds fit i64 or not
    0, -1,
)


def _set_timestamp(ts: Any, seconds: int, nanos: int) -> None:
    ts.seconds = seconds
    ts.nanos = nanos


Mutation = Callable[[events_pb2.Event], None]


_ENDPOINTISH = st.sampled_from([
    "10.0.0.1:50051", "10.0.0.1:0", "10.0.0.1:65536", "[::1]:80", "[::1", "host:", ":80",
    "a b:1", "payments", "10.0.0.1:50051 ", "x" * 300 + ":1",
])
_text_or_endpoint = _text | _ENDPOINTISH
_UNDEFINED_ENUM = st.one_of(
    st.integers(5, 2**31 - 1), st.integers(-(2**31), -1), st.sampled_from([4, 5, 99, -1]))
"""Values no enum of events.proto defines (4 only BreakerMode does: the oracle decides)."""


def _set_payload_field(index: int, text: str, u64: int, u32: int, real: float, enum: int,
                       texts: list[str]) -> Mutation:
    """Set field number ``index`` (mod the count) of whatever payload the event carries to a
    value of that field's type: generic over every payload, present and future."""
    def mutate(event: events_pb2.Event) -> None:
        which = event.WhichOneof("payload")
        if which is None:
            return
        payload = getattr(event, which)
        fields = [f for f in payload.DESCRIPTOR.fields if f.type != FieldDescriptor.TYPE_MESSAGE]
        field = fields[index % len(fields)]
        if field.is_repeated:
            del getattr(payload, field.name)[:]
            getattr(payload, field.name).extend(texts)
            return
        value: object = {
            FieldDescriptor.TYPE_STRING: text, FieldDescriptor.TYPE_UINT64: u64,
            FieldDescriptor.TYPE_UINT32: u32, FieldDescriptor.TYPE_DOUBLE: real,
            FieldDescriptor.TYPE_ENUM: enum,
        }[field.type]
        setattr(payload, field.name, value)
    return mutate


def _set_undefined_enum(index: int, value: int) -> Mutation:
    """Set one enum field of the event's payload to ``value`` (a no-op without enums)."""
    def mutate(event: events_pb2.Event) -> None:
        which = event.WhichOneof("payload")
        if which is None:
            return
        payload = getattr(event, which)
        enums = [f for f in payload.DESCRIPTOR.fields if f.type == FieldDescriptor.TYPE_ENUM]
        if enums:
            setattr(payload, enums[index % len(enums)].name, value)
    return mutate


def _mutations() -> st.SearchStrategy[Mutation]:
    """One change to a valid event: each a way a producer (or attacker) could get it wrong."""
    def payload(event: events_pb2.Event) -> Any:
        return event.breaker_transitioned

    field_setters: list[st.SearchStrategy[Mutation]] = [
        _text.map(lambda v: lambda e: setattr(e, "event_id", v)),
        st.uuids().map(lambda v: lambda e: setattr(e, "event_id", str(v).upper())),
        _text.map(lambda v: lambda e: setattr(e, "stream", v)),
        _u64.map(lambda v: lambda e: setattr(e, "version", v)),
        _text.map(lambda v: lambda e: setattr(e, "type", v)),
        st.sampled_from(sorted({k.title().replace("_", "") for k in MAKERS})).map(
            lambda v: lambda e: setattr(e, "type", v)),
        st.tuples(_i64, _nanos).map(
            lambda v: lambda e: _set_timestamp(e.occurred_at, *v)),
        st.sampled_from(BOUNDARY_SECONDS).map(
            lambda v: lambda e: _set_timestamp(e.occurred_at, v, 0)),
        st.just(lambda e: e.ClearField("occurred_at")),
        _text.map(lambda v: lambda e: setattr(e, "trace_id", v)),
        st.sampled_from(["0" * 32, "A" * 32, "g" * 32]).map(
            lambda v: lambda e: setattr(e, "trace_id", v)),
        st.binary(max_size=40).map(lambda v: lambda e: setattr(e, "prev_hash", v)),
        st.binary(max_size=40).map(lambda v: lambda e: setattr(e, "hash", v)),
        _u64.map(lambda v: lambda e: setattr(e, "global_position", v)),
        st.tuples(_i64, _nanos).map(lambda v: lambda e: _set_timestamp(e.recorded_at, *v)),
        st.just(lambda e: e.ClearField(e.WhichOneof("payload") or "breaker_transitioned")),
        st.sampled_from(sorted(MAKERS)).map(
            lambda v: lambda e: getattr(e, v).SetInParent()),
        st.builds(_set_payload_field, st.integers(0, 63), _text_or_endpoint, _u64, _u32,
                  st.floats(allow_nan=True, allow_infinity=True), _enum,
                  st.lists(_text_or_endpoint, max_size=4)),
        st.builds(_set_undefined_enum, st.integers(0, 63), _UNDEFINED_ENUM),
        _text.map(lambda v: lambda e: setattr(payload(e), "breaker", v)),
        _enum.map(lambda v: lambda e: setattr(payload(e), "from_state", v)),
        _enum.map(lambda v: lambda e: setattr(payload(e), "to_state", v)),
        _enum.map(lambda v: lambda e: setattr(payload(e), "mode", v)),
        st.floats(allow_nan=True, allow_infinity=True).map(
            lambda v: lambda e: setattr(payload(e).window, "failure_rate", v)),
    ]
    return st.one_of(field_setters)


@st.composite
def _bad_append(draw: st.DrawFn) -> eventlog_pb2.AppendRequest:
    """An AppendRequest whose events carry one or two mutations, with or without the hash
    recomputed afterwards (so some bad events reach the chain check and some do not); or an
    event with an enum value its proto does not define; or a valid event of any payload."""
    shape = draw(st.sampled_from(
        ["mutated", "mutated", "undefined_enum", "valid", "batch", "empty", "oversized"]))
    if shape == "empty":
        return eventlog_pb2.AppendRequest()
    if shape == "oversized":  # more events than the server's batch limit
        event = _valid_event()
        return eventlog_pb2.AppendRequest(events=[event] * 1001)
    if shape == "batch":  # the same event twice, or a version gap, inside one batch
        producer = StreamFactory("fuzz", f"pod-{next(_fresh)}")
        first, second = to_proto(producer.transition()), to_proto(producer.transition())
        events = draw(st.sampled_from([[first, first], [second], [first, second, first]]))
        return eventlog_pb2.AppendRequest(events=events)
    if shape == "valid":
        return eventlog_pb2.AppendRequest(events=[_valid_event(draw(st.sampled_from(
            sorted(MAKERS))))])
    if shape == "undefined_enum":
        event = _valid_event(draw(st.sampled_from(WITH_ENUMS)))
        mutations = [draw(st.builds(_set_undefined_enum, st.integers(0, 63), _UNDEFINED_ENUM))]
        mutations += draw(st.lists(_mutations(), max_size=1))
    else:
        event = _valid_event(draw(st.sampled_from(sorted(MAKERS))))
        mutations = draw(st.lists(_mutations(), min_size=1, max_size=2))
    for mutate in mutations:
        mutate(event)
    if draw(st.booleans()):
        try:
            event.hash = chain.proto_hash(event)
        except ValueError:
            pass  # not hashable (e.g. prev_hash of the wrong size): send it as it is
    return eventlog_pb2.AppendRequest(events=[event])


@st.composite
def _bad_read(draw: st.DrawFn) -> tuple[str, Any]:
    flt = eventlog_pb2.EventFilter(
        service=draw(_text), instance=draw(_text), upstream=draw(_text),
        types=draw(st.lists(_text, max_size=20)))
    if draw(st.booleans()):
        _set_timestamp(flt.from_time, draw(_i64), draw(_nanos))
    if draw(st.booleans()):
        _set_timestamp(flt.to_time, draw(_i64), draw(_nanos))
    method = draw(st.sampled_from(["ReadStream", "ReadAll", "Subscribe", "GetBreakerStatus",
                                   "ListBreakerStatus"]))
    if method == "ReadStream":
        return method, eventlog_pb2.ReadStreamRequest(
            stream=draw(_text | st.just("fuzz/pod-1")), from_version=draw(_u64),
            limit=draw(_u32))
    if method == "ReadAll":
        return method, eventlog_pb2.ReadAllRequest(from_position=draw(_u64), limit=draw(_u32),
                                                   filter=flt)
    if method == "Subscribe":
        return method, eventlog_pb2.SubscribeRequest(
            from_position=draw(_u64), filter=flt, heartbeat_interval_ms=draw(_u32))
    request_class = (eventlog_pb2.GetBreakerStatusRequest if method == "GetBreakerStatus"
                     else eventlog_pb2.ListBreakerStatusRequest)
    return method, request_class(service=draw(_text), upstream=draw(_text))


def test_valid_protobuf_with_bad_contents_is_refused_and_never_stored(
        eventlog: EventLogProcess, eventlog_server: ServerUnderFuzz) -> None:
    head_before, _ = _head_and_verify(eventlog)
    appends: Counter[str] = Counter()
    reads: Counter[str] = Counter()
    accepted = 0
    enum_refusals = 0
    started = time.monotonic()

    @FUZZ
    @given(request=_bad_append())
    def fuzz_append(request: eventlog_pb2.AppendRequest) -> None:
        nonlocal accepted, enum_refusals
        outcome = _call_raw(eventlog, "Append", request.SerializeToString())
        appends[outcome.code.name] += 1
        undefined = [value for event in request.events for value in _undefined_enums(event)]
        if undefined:
            assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT, (
                f"Append with undefined enum values {undefined} got {outcome.code.name}")
            enum_refusals += 1
        if outcome.error is not None:
            assert_clear_refusal(outcome.error, f"Append({request!s:.300})")
        accepted += outcome.stored

    @FUZZ
    @given(call=_bad_read())
    def fuzz_reads(call: tuple[str, Any]) -> None:
        method, request = call
        outcome = _call_raw(eventlog, method, request.SerializeToString())
        reads[f"{method}:{outcome.code.name}"] += 1
        _check(method, request.SerializeToString(), outcome)

    fuzz_append()
    fuzz_reads()
    for kind in sorted(MAKERS):  # and one valid event of every payload, whatever was drawn
        reply = eventlog.append([_valid_event(kind)])
        accepted += sum(1 for r in reply.results if not r.duplicate)
    head_after, ok = _head_and_verify(eventlog)
    print(f"\nFUZZ eventlog messages: {sum(appends.values()) + sum(reads.values())} calls in "
          f"{time.monotonic() - started:.1f} s; Append {dict(appends)}, stored {accepted}; "
          f"reads {dict(reads)}")
    assert ok, "verify failed after the fuzz run"
    assert head_after - head_before == accepted
    assert appends["INVALID_ARGUMENT"] > 0
    assert enum_refusals > 0, "no event with an undefined enum value was tried"
    stored_types = _assert_stored_events_are_valid(eventlog, head_before)
    print(f"stored by type: {dict(stored_types)}; undefined-enum refusals: {enum_refusals}")
    assert {"EndpointsChanged", "EndpointEjected", "EndpointReturned"} <= set(stored_types)
    # the projections folded whatever was accepted without dying
    eventlog.stub.ListBreakerStatus(eventlog_pb2.ListBreakerStatusRequest(), timeout=10)
    eventlog_server.assert_alive_and_serving()
    eventlog_server.assert_no_traceback_logged()
