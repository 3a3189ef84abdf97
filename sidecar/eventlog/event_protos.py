"""The event payloads as protobuf: their kinds, decoding, and the envelope ↔ record conversion.

``events_pb2.Event`` (the envelope the API carries) ↔ ``NewEvent``/``StoredEvent`` (the port's
records), and the typed payload of a stored event, decoded for projections, audit and queries.
The structural checks of one record are the port's (``sidecar.eventlog.port.limits``).

Pure functions, no I/O, safe from any thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from google.protobuf.message import DecodeError, Message

from sidecar import chain
from sidecar.eventlog.port import InvalidEventError, NewEvent, StoredEvent, validate_new_event
from sidecar.v1 import events_pb2

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
