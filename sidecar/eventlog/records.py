"""Conversion between the protobuf envelope (``events_pb2.Event``) and the store's records, and
the structural validation every adapter applies before storing.

Pure functions, no I/O, safe from any thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from google.protobuf.message import DecodeError, Message

from sidecar import chain
from sidecar.eventlog.store import InvalidEventError, NewEvent, StoredEvent
from sidecar.v1 import events_pb2

MAX_STREAM_CHARS = 256
MAX_TYPE_CHARS = 128
MAX_PAYLOAD_BYTES = 64 * 1024
"""Bounds checked by ``validate_new_event`` (named here, the one place for their defaults)."""

OCCURRED_AT_MIN_NS: Final = 1
"""Earliest accepted ``occurred_at``: just after 1970-01-01T00:00:00Z.

Times at or before the Unix epoch are refused on purpose: events come from a running sidecar's
wall clock, and such a time means a clock that was never set (an RTC reset to 0); 0 also means
"unset" in the protobuf envelope and "unbounded" in ``EventFilter``."""
OCCURRED_AT_MAX_NS: Final = 2**63 - 1
"""Latest accepted ``occurred_at``: 2262-04-11T23:47:16.854775807Z, the largest signed 64-bit
nanosecond count (how the hash chain and both stores encode it)."""
OCCURRED_AT_RANGE: Final = (
    "must be after 1970-01-01T00:00:00Z and no later than 2262-04-11T23:47:16.854775807Z "
    "(signed 64-bit nanoseconds since the Unix epoch)"
)


def occurred_at_out_of_range(seconds: int, nanos: int) -> str:
    """The problem text for an ``occurred_at`` that is set but outside the accepted range,
    naming the value (and its calendar time when it has one)."""
    got = f"seconds={seconds} nanos={nanos}"
    try:
        moment = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        pass
    else:
        got += f" ({moment.replace(tzinfo=None).isoformat()}Z)"
    return f"{OCCURRED_AT_RANGE}, got {got}"

Payload = (
    events_pb2.BreakerTransitioned
    | events_pb2.BreakerModeChanged
    | events_pb2.ConfigApplied
    | events_pb2.EndpointsChanged
    | events_pb2.EndpointEjected
    | events_pb2.EndpointReturned
)


@dataclass(frozen=True, slots=True)
class PayloadKind:
    """How one event ``type`` maps onto the envelope's ``payload`` oneof."""

    event_type: str
    oneof_field: str
    message_class: type[Payload]


def _payload_kinds() -> dict[str, PayloadKind]:
    """One kind per field of the envelope's ``payload`` oneof, from its descriptor: the
    ``type`` is the payload message's name (``BreakerTransitioned``)."""
    kinds = {}
    for field in events_pb2.Event.DESCRIPTOR.oneofs_by_name["payload"].fields:
        message_class = getattr(events_pb2, field.message_type.name)
        kinds[field.message_type.name] = PayloadKind(
            field.message_type.name, field.name, message_class
        )
    return kinds


PAYLOAD_KINDS: Final[dict[str, PayloadKind]] = _payload_kinds()
"""Event ``type`` → its payload kind: BreakerTransitioned, BreakerModeChanged, ConfigApplied,
EndpointsChanged, EndpointEjected, EndpointReturned."""
_KIND_BY_FIELD = {kind.oneof_field: kind for kind in PAYLOAD_KINDS.values()}

_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def filter_columns(payload: Message) -> tuple[str, str, str]:
    """(service, instance, upstream) of a typed payload; "" where it has no such field."""
    return (
        str(getattr(payload, "service", "")),
        str(getattr(payload, "instance", "")),
        str(getattr(payload, "upstream", "")),
    )


def decode_payload(event_type: str, payload: bytes) -> Payload | None:
    """The typed payload message of a stored event, or None for a type this build does not know.

    Raises ``InvalidEventError`` (field ``payload``) when the bytes do not parse.
    """
    kind = PAYLOAD_KINDS.get(event_type)
    if kind is None:
        return None
    message: Payload = kind.message_class()
    try:
        message.ParseFromString(payload)
    except DecodeError as exc:
        raise InvalidEventError("payload", f"not a valid {event_type} message: {exc}") from exc
    return message


def new_event_from_proto(event: events_pb2.Event) -> NewEvent:
    """The record for an appended envelope. Validates it (``InvalidEventError`` names the field).

    Store-assigned fields of the envelope (``global_position``, ``recorded_at``) are ignored.
    """
    which = event.WhichOneof("payload")
    if which is None:
        raise InvalidEventError("payload", "no payload set", event_id=event.event_id)
    kind = _KIND_BY_FIELD[which]
    if event.type != kind.event_type:
        raise InvalidEventError(
            "type",
            f"is {event.type!r} but the payload is {kind.event_type} (type must name the payload)",
            event_id=event.event_id,
        )
    service, instance, upstream = filter_columns(getattr(event, which))
    record = NewEvent(
        event_id=event.event_id,
        stream=event.stream,
        version=int(event.version),
        type=event.type,
        occurred_at_ns=chain.timestamp_ns(event),
        trace_id=event.trace_id,
        payload=chain.payload_bytes(event),
        prev_hash=bytes(event.prev_hash),
        hash=bytes(event.hash),
        service=service,
        instance=instance,
        upstream=upstream,
    )
    validate_new_event(record)
    return record


def to_proto(event: StoredEvent | NewEvent) -> events_pb2.Event:
    """The envelope for a record (store-assigned fields set when ``event`` is stored).

    An unknown ``type`` leaves the payload oneof empty (the hash still covers the bytes).
    """
    message = events_pb2.Event(
        event_id=event.event_id,
        stream=event.stream,
        version=event.version,
        type=event.type,
        trace_id=event.trace_id,
        prev_hash=event.prev_hash,
        hash=event.hash,
    )
    message.occurred_at.seconds, message.occurred_at.nanos = divmod(
        event.occurred_at_ns, 1_000_000_000
    )
    if isinstance(event, StoredEvent):
        message.global_position = event.global_position
        message.recorded_at.seconds, message.recorded_at.nanos = divmod(
            event.recorded_at_ns, 1_000_000_000
        )
    kind = PAYLOAD_KINDS.get(event.type)
    if kind is not None:
        getattr(message, kind.oneof_field).ParseFromString(event.payload)
    return message


def validate_new_event(event: NewEvent) -> None:
    """Structural checks every adapter makes before storing; raises ``InvalidEventError``.

    Chain checks (version sequence, prev_hash, hash) need the stream head and are the
    adapter's job; this only checks what one event can tell about itself.
    """

    def bad(field: str, problem: str) -> InvalidEventError:
        return InvalidEventError(field, problem, event_id=event.event_id)

    if not _CANONICAL_UUID.fullmatch(event.event_id):
        raise bad("event_id", f"{event.event_id!r} is not a UUID in canonical lowercase form")
    if not event.stream or len(event.stream) > MAX_STREAM_CHARS:
        raise bad("stream", f"must be 1..{MAX_STREAM_CHARS} characters")
    if event.version < 1 or event.version >= 2**63:
        raise bad("version", f"must be >= 1 (got {event.version})")
    if not event.type or len(event.type) > MAX_TYPE_CHARS:
        raise bad("type", f"must be 1..{MAX_TYPE_CHARS} characters")
    if event.occurred_at_ns == 0:
        raise bad("occurred_at", "must be set (nanoseconds since the Unix epoch)")
    if not OCCURRED_AT_MIN_NS <= event.occurred_at_ns <= OCCURRED_AT_MAX_NS:
        raise bad("occurred_at", occurred_at_out_of_range(*divmod(event.occurred_at_ns, 10**9)))
    if event.trace_id and not _TRACE_ID.fullmatch(event.trace_id):
        raise bad("trace_id", "must be empty or 32 lowercase hex characters")
    if len(event.payload) > MAX_PAYLOAD_BYTES:
        raise bad("payload", f"{len(event.payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    for name, value in (("prev_hash", event.prev_hash), ("hash", event.hash)):
        if len(value) != chain.HASH_SIZE_BYTES:
            raise bad(name, f"must be {chain.HASH_SIZE_BYTES} bytes (got {len(value)})")
    if (event.service or event.instance) and event.stream != f"{event.service}/{event.instance}":
        raise bad(
            "stream",
            f"{event.stream!r} does not match the payload's service/instance "
            f"{event.service + '/' + event.instance!r}",
        )
