"""Field-by-field validation of requests to the event log, before anything reaches the store.

Every check raises :class:`InvalidField` naming the field path as the client wrote it
(``events[3].trace_id``) and the problem; the server turns it into INVALID_ARGUMENT. The hash
chain itself (``prev_hash`` linking, ``hash`` recomputed) is the store's job on append
(``ChainError``); here only the shapes are checked.

Pure functions on protobuf messages: no I/O, safe from any thread, cheap enough to run on every
event of every batch (a few microseconds each; see benchmarks/eventlog.py). ``append_records``
validates and converts an Append request to store records in the same pass.
"""

from __future__ import annotations

import functools
import re
from typing import Final

from sidecar.eventlog.api.payload_checks import MAX_NAME_CHARS as MAX_NAME_CHARS
from sidecar.eventlog.api.payload_checks import InvalidField as InvalidField
from sidecar.eventlog.api.payload_checks import check_name as _check_name
from sidecar.eventlog.api.payload_checks import check_payload
from sidecar.eventlog.api.payload_checks import short as _short
from sidecar.eventlog.event_protos import PAYLOAD_KINDS
from sidecar.eventlog.port import (
    OCCURRED_AT_MAX_NS,
    OCCURRED_AT_MIN_NS,
    NewEvent,
    occurred_at_out_of_range,
)
from sidecar.v1 import eventlog_pb2, events_pb2

HASH_SIZE_BYTES: Final = 32
MAX_STREAM_PART_CHARS: Final = 128
"""Longest service or instance name in a stream id."""
STREAM_CACHE_SIZE: Final = 4096
"""Stream ids whose validation result is remembered (a bounded LRU cache)."""
MAX_FILTER_TYPES: Final = 16
"""Most event types one filter may list."""
MAX_TIMESTAMP_SECONDS: Final = 253_402_300_799
"""9999-12-31T23:59:59Z, the protobuf Timestamp upper bound."""
MIN_TIMESTAMP_SECONDS: Final = -62_135_596_800
"""0001-01-01T00:00:00Z, the protobuf Timestamp lower bound."""

PAYLOAD_TYPES: Final[dict[str, str]] = {
    kind.oneof_field: kind.event_type for kind in PAYLOAD_KINDS.values()
}
"""Oneof field of ``Event.payload`` → the ``type`` an event carrying it must have (every
payload the proto defines: ``breaker_transitioned`` → ``BreakerTransitioned``, ...)."""
EVENT_TYPES: Final = frozenset(PAYLOAD_TYPES.values())

_UUID_RE: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TRACE_ID_RE: Final = re.compile(r"[0-9a-f]{32}")
_NAME_PART_RE: Final = re.compile(r"[A-Za-z0-9._:-]+")
_ZERO_TRACE_ID: Final = "0" * 32


def split_stream(stream: str, field: str = "stream") -> tuple[str, str]:
    """``"service/instance"`` → ``(service, instance)``; :class:`InvalidField` otherwise.

    Each part is 1..128 characters of ``A-Z a-z 0-9 . _ : -`` (no second slash).
    """
    parts = _stream_parts(stream)
    if isinstance(parts, str):
        raise InvalidField(field, parts)
    return parts


@functools.lru_cache(maxsize=STREAM_CACHE_SIZE)
def _stream_parts(stream: str) -> tuple[str, str] | str:
    """The parts of a stream id, or the problem with it. Cached: a batch, and a log, names few
    streams many times, and this runs for every appended event."""
    service, sep, instance = stream.partition("/")
    if not sep or not service or not instance:
        return f"must be 'service/instance', got {_short(stream)}"
    for part_name, part in (("service", service), ("instance", instance)):
        if len(part) > MAX_STREAM_PART_CHARS or not _NAME_PART_RE.fullmatch(part):
            return (
                f"{part_name} part {_short(part)} must be 1-{MAX_STREAM_PART_CHARS} characters "
                "of letters, digits, '.', '_', ':' or '-'"
            )
    return service, instance


def _check_timestamp(ts: object, field: str) -> None:
    seconds: int = ts.seconds  # type: ignore[attr-defined]
    nanos: int = ts.nanos  # type: ignore[attr-defined]
    if not MIN_TIMESTAMP_SECONDS <= seconds <= MAX_TIMESTAMP_SECONDS:
        raise InvalidField(field, f"seconds {seconds} is outside years 0001-9999")
    if not 0 <= nanos < 1_000_000_000:
        raise InvalidField(field, f"nanos {nanos} must be in [0, 999999999]")


def validate_event(event: events_pb2.Event, field: str = "event") -> None:
    """Check one producer-made event (``global_position`` and ``recorded_at`` are ignored).

    Raises :class:`InvalidField` for: ``event_id`` not a lowercase canonical UUID; ``stream`` not
    ``service/instance``; ``version`` < 1; no payload, or ``type`` not the payload's type; the
    payload's ``service``/``instance`` not those of the stream; a payload that fails its own
    checks (:func:`~sidecar.eventlog.api.payload_checks.check_payload`: any enum value the proto
    does not define, a missing ``upstream``, an endpoint not ``HOST:PORT``, ...);
    ``occurred_at`` unset, or set but outside
    (1970-01-01T00:00:00Z, 2262-04-11T23:47:16.854775807Z] (signed 64-bit nanoseconds since
    the Unix epoch; why not before 1970: ``sidecar.eventlog.port.limits.OCCURRED_AT_MIN_NS``),
    each with its own reason; ``trace_id`` neither empty nor 32 lowercase hex (all zeros is
    invalid, as in W3C trace context); ``prev_hash`` or ``hash`` not 32 bytes.
    """
    event_record(event, field)


def event_record(event: events_pb2.Event, field: str = "event") -> NewEvent:
    """:func:`validate_event`, then the store record of the event, in one pass over its fields.

    One pass matters: every proto field access builds a Python object, and Append runs this
    for every event of every batch (see benchmarks/eventlog.py).
    """
    event_id = event.event_id
    if len(event_id) != 36 or not _UUID_RE.fullmatch(event_id):
        raise InvalidField(
            f"{field}.event_id",
            f"must be a lowercase UUID like 01890a5d-ac96-774b-bcce-b302099a8057, "
            f"got {_short(event_id)}",
        )
    stream = event.stream
    service, instance = split_stream(stream, f"{field}.stream")
    version = event.version
    if version < 1:
        raise InvalidField(f"{field}.version", "must be >= 1 (versions count from 1)")
    which = event.WhichOneof("payload")
    if which is None:
        raise InvalidField(
            f"{field}.payload", f"must be set (one of {', '.join(sorted(PAYLOAD_TYPES))})"
        )
    expected_type = PAYLOAD_TYPES[which]
    event_type = event.type
    if event_type != expected_type:
        raise InvalidField(
            f"{field}.type",
            f"must be {expected_type!r} for a {which} payload, got {_short(event_type)}",
        )
    payload = getattr(event, which)
    if payload.service != service:
        raise InvalidField(
            f"{field}.{which}.service",
            f"{_short(payload.service)} differs from the stream's service {service!r}",
        )
    if payload.instance != instance:
        raise InvalidField(
            f"{field}.{which}.instance",
            f"{_short(payload.instance)} differs from the stream's instance {instance!r}",
        )
    upstream = check_payload(which, payload, field)
    if not event.HasField("occurred_at"):
        raise InvalidField(f"{field}.occurred_at", "must be set (the producer's clock)")
    occurred_at = event.occurred_at
    seconds, nanos = occurred_at.seconds, occurred_at.nanos
    if not 0 <= nanos < 1_000_000_000:
        raise InvalidField(f"{field}.occurred_at", f"nanos {nanos} must be in [0, 999999999]")
    occurred_at_ns = seconds * 1_000_000_000 + nanos
    if not OCCURRED_AT_MIN_NS <= occurred_at_ns <= OCCURRED_AT_MAX_NS:
        raise InvalidField(f"{field}.occurred_at", occurred_at_out_of_range(seconds, nanos))
    trace_id = event.trace_id
    if trace_id and (
        len(trace_id) != 32 or trace_id == _ZERO_TRACE_ID or not _TRACE_ID_RE.fullmatch(trace_id)
    ):
        raise InvalidField(
            f"{field}.trace_id",
            f"must be empty or 32 lowercase hex characters (not all zero), got {_short(trace_id)}",
        )
    prev_hash = event.prev_hash
    if len(prev_hash) != HASH_SIZE_BYTES:
        raise InvalidField(
            f"{field}.prev_hash", f"must be {HASH_SIZE_BYTES} bytes, got {len(prev_hash)}"
        )
    event_hash = event.hash
    if len(event_hash) != HASH_SIZE_BYTES:
        raise InvalidField(
            f"{field}.hash", f"must be {HASH_SIZE_BYTES} bytes, got {len(event_hash)}"
        )
    return NewEvent(
        event_id=event_id,
        stream=stream,
        version=version,
        type=event_type,
        occurred_at_ns=occurred_at_ns,
        trace_id=trace_id,
        payload=payload.SerializeToString(deterministic=True),
        prev_hash=prev_hash,
        hash=event_hash,
        service=service,
        instance=instance,
        upstream=upstream,
    )


def validate_append(request: eventlog_pb2.AppendRequest, max_batch_events: int) -> None:
    """Check a whole Append request (see :func:`append_records`)."""
    append_records(request, max_batch_events)


def append_records(request: eventlog_pb2.AppendRequest, max_batch_events: int) -> list[NewEvent]:
    """The records of a valid Append request: 1..max_batch_events valid events, no event id and
    no ``(stream, version)`` twice in one batch (a retry resends the whole batch instead).

    Raises :class:`InvalidField` with the event's index in the field path
    (``events[3].trace_id``).
    """
    events = request.events
    count = len(events)
    if count == 0:
        raise InvalidField("events", "must hold at least one event")
    if count > max_batch_events:
        raise InvalidField(
            "events", f"holds {count} events, more than the limit of {max_batch_events} a batch"
        )
    records: list[NewEvent] = []
    seen_ids: dict[str, int] = {}
    seen_versions: dict[tuple[str, int], int] = {}
    for index, event in enumerate(events):
        try:
            record = event_record(event, "")
        except InvalidField as exc:
            raise InvalidField(f"events[{index}]{exc.field}", exc.problem) from None
        first = seen_ids.setdefault(record.event_id, index)
        if first != index:
            raise InvalidField(
                f"events[{index}].event_id", f"{record.event_id} already appears in events[{first}]"
            )
        first = seen_versions.setdefault((record.stream, record.version), index)
        if first != index:
            raise InvalidField(
                f"events[{index}].version",
                f"version {record.version} of stream {record.stream!r} already appears in "
                f"events[{first}]",
            )
        records.append(record)
    return records


def validate_filter(flt: eventlog_pb2.EventFilter, field: str = "filter") -> None:
    """Check filter fields: names bounded, types known, the time range well formed."""
    if flt.service:
        split_stream(f"{flt.service}/x", f"{field}.service")
    if flt.instance:
        split_stream(f"x/{flt.instance}", f"{field}.instance")
    _check_name(flt.upstream, f"{field}.upstream", required=False)
    if len(flt.types) > MAX_FILTER_TYPES:
        raise InvalidField(
            f"{field}.types", f"lists {len(flt.types)} types (max {MAX_FILTER_TYPES})"
        )
    for i, type_name in enumerate(flt.types):
        if type_name not in EVENT_TYPES:
            raise InvalidField(
                f"{field}.types[{i}]",
                f"unknown event type {_short(type_name)} (known: {', '.join(sorted(EVENT_TYPES))})",
            )
    has_from, has_to = flt.HasField("from_time"), flt.HasField("to_time")
    if has_from:
        _check_timestamp(flt.from_time, f"{field}.from_time")
    if has_to:
        _check_timestamp(flt.to_time, f"{field}.to_time")
    if has_from and has_to:
        start = (flt.from_time.seconds, flt.from_time.nanos)
        end = (flt.to_time.seconds, flt.to_time.nanos)
        if end <= start:
            raise InvalidField(f"{field}.to_time", "must be after from_time")
