"""Valid, chained endpoint events (EndpointsChanged, EndpointEjected, EndpointReturned) for
the event log's tests, made through a ``tests.support.events.StreamFactory`` like the breaker
events it makes itself.

Example::

    producer = StreamFactory("checkout", "pod-1")
    changed = endpoints_changed(producer, "payments", added=["10.0.0.1:50051", "10.0.0.2:50051"])
    ejected = endpoint_ejected(producer, "payments", "10.0.0.1:50051")
    returned = endpoint_returned(producer, "payments", "10.0.0.1:50051")
"""

from __future__ import annotations

from collections.abc import Sequence

from sidecar.eventlog.event_protos import PAYLOAD_KINDS
from sidecar.eventlog.port import NewEvent
from sidecar.v1 import events_pb2
from tests.support.events import StreamFactory, rehash

ENDPOINT_A = "10.0.0.1:50051"
ENDPOINT_B = "10.0.0.2:50051"
ENDPOINT_C = "10.0.0.3:50051"


def endpoints_changed(
    producer: StreamFactory,
    upstream: str = "payments",
    *,
    added: Sequence[str] = (ENDPOINT_A, ENDPOINT_B),
    removed: Sequence[str] = (),
    count: int | None = None,
    source: str = "endpoints",
    at_ns: int | None = None,
) -> NewEvent:
    """An ``EndpointsChanged``; ``count`` defaults to the added endpoints' number."""
    payload = events_pb2.EndpointsChanged(
        service=producer.service,
        instance=producer.instance,
        upstream=upstream,
        added=sorted(added),
        removed=sorted(removed),
        count=len(added) if count is None else count,
        source=source,
    )
    return producer.next(payload, at_ns=at_ns)


def ejected_payload(
    producer: StreamFactory,
    upstream: str = "payments",
    endpoint: str = ENDPOINT_A,
    *,
    reason: int = events_pb2.EJECTION_REASON_CONSECUTIVE_FAILURES,
    ejection_ms: int = 30_000,
    ejections_in_a_row: int = 1,
) -> events_pb2.EndpointEjected:
    return events_pb2.EndpointEjected(
        service=producer.service,
        instance=producer.instance,
        upstream=upstream,
        endpoint=endpoint,
        reason=reason,  # type: ignore[arg-type]
        ejection_ms=ejection_ms,
        ejections_in_a_row=ejections_in_a_row,
        consecutive_failures=5,
        failure_rate=0.625,
        calls=8,
    )


def endpoint_ejected(
    producer: StreamFactory,
    upstream: str = "payments",
    endpoint: str = ENDPOINT_A,
    *,
    reason: int = events_pb2.EJECTION_REASON_CONSECUTIVE_FAILURES,
    ejection_ms: int = 30_000,
    ejections_in_a_row: int = 1,
    at_ns: int | None = None,
) -> NewEvent:
    """An ``EndpointEjected`` (reason by number: out-of-range values make bad events)."""
    payload = ejected_payload(producer, upstream, endpoint, reason=reason,
                              ejection_ms=ejection_ms, ejections_in_a_row=ejections_in_a_row)
    return producer.next(payload, at_ns=at_ns)


def endpoint_returned(
    producer: StreamFactory,
    upstream: str = "payments",
    endpoint: str = ENDPOINT_A,
    *,
    ejected_for_ms: int = 30_000,
    at_ns: int | None = None,
) -> NewEvent:
    """An ``EndpointReturned``."""
    payload = events_pb2.EndpointReturned(
        service=producer.service,
        instance=producer.instance,
        upstream=upstream,
        endpoint=endpoint,
        ejected_for_ms=ejected_for_ms,
    )
    return producer.next(payload, at_ns=at_ns)


def endpoint_events(producer: StreamFactory, upstream: str = "payments") -> list[NewEvent]:
    """One of each: two endpoints join, one is ejected and returns, another is ejected."""
    return [
        endpoints_changed(producer, upstream, added=[ENDPOINT_A, ENDPOINT_B]),
        endpoint_ejected(producer, upstream, ENDPOINT_A),
        endpoint_returned(producer, upstream, ENDPOINT_A),
        endpoint_ejected(producer, upstream, ENDPOINT_B,
                         reason=events_pb2.EJECTION_REASON_FAILURE_RATE),
    ]


# --- events Append refuses, as a store may still hold them -------------------------------------


def with_enum_values(event: NewEvent, **fields: int) -> NewEvent:
    """``event`` with enum fields of its payload set to any number (``to_state=99``) and its
    hash recomputed: what a store holds when such an event got in before Append checked enums,
    or came from a newer producer (the stores themselves do not look into payloads)."""
    payload = PAYLOAD_KINDS[event.type].message_class.FromString(event.payload)
    for name, value in fields.items():
        setattr(payload, name, value)
    return rehash(event, payload=payload.SerializeToString(deterministic=True))


def relinked(events: Sequence[NewEvent]) -> list[NewEvent]:
    """The events of one stream chained again (``prev_hash``, ``hash``) after some changed."""
    linked: list[NewEvent] = []
    for event in events:
        if linked:
            event = rehash(event, prev_hash=linked[-1].hash)
        linked.append(event)
    return linked


def unknown_enum_log(producer: StreamFactory) -> list[NewEvent]:
    """A chained stream with an unknown value in each kind of enum field: a configured
    upstream, a transition to state 99, one from 99 in mode 42, a mode change to -7 and an
    ejection for reason 12 (5 unknown values in 4 events after the ConfigApplied)."""
    return relinked([
        producer.config_applied(["payments"]),
        with_enum_values(producer.transition("payments", "CLOSED", "OPEN"), to_state=99),
        with_enum_values(producer.transition("payments", "OPEN", "HALF_OPEN"),
                         from_state=99, mode=42),
        with_enum_values(producer.mode_changed("payments"), to_mode=-7),
        with_enum_values(endpoint_ejected(producer), reason=12),
    ])
