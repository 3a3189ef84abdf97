"""The store contract for the endpoint events (EndpointsChanged, EndpointEjected,
EndpointReturned) and for payloads holding enum values the proto does not define.

A mixin of :class:`tests.contract.store_contract.EventStoreContract`, so every adapter that
runs the contract (SQLite, NATS JetStream on one and three nodes) runs these too. A store never
looks into payload enums: what Append refuses is the server's validation, and a store must keep
and return whatever an older server or a newer producer stored, byte for byte.
"""

from __future__ import annotations

from sidecar.eventlog.audit import verify
from sidecar.eventlog.event_protos import decode_payload
from sidecar.eventlog.port import EventFilter, EventStore
from sidecar.v1 import events_pb2
from tests.contract.endpoint_events import (
    ENDPOINT_A,
    ENDPOINT_B,
    ENDPOINT_C,
    endpoint_ejected,
    endpoint_events,
    endpoint_returned,
    endpoints_changed,
    unknown_enum_log,
)
from tests.support.events import StreamFactory


class EndpointEventsContract:
    """Endpoint events and unknown enum values, on any ``EventStore``."""

    async def test_endpoint_events_read_back_unchanged_with_their_upstream_column(
        self, store: EventStore
    ) -> None:
        producer = StreamFactory("checkout", "pod-1")
        appended = endpoint_events(producer)

        outcomes = await store.append(appended)

        assert [o.global_position for o in outcomes] == [1, 2, 3, 4]
        stored = await store.read_stream(producer.stream)
        assert [e.as_new_event() for e in stored] == appended
        assert {(e.service, e.instance, e.upstream) for e in stored} == {
            ("checkout", "pod-1", "payments")}
        ejected = decode_payload(stored[1].type, stored[1].payload)
        assert isinstance(ejected, events_pb2.EndpointEjected)
        assert (ejected.endpoint, ejected.reason) == (
            ENDPOINT_A, events_pb2.EJECTION_REASON_CONSECUTIVE_FAILURES)
        changed = decode_payload(stored[0].type, stored[0].payload)
        assert isinstance(changed, events_pb2.EndpointsChanged)
        assert list(changed.added) == [ENDPOINT_A, ENDPOINT_B] and changed.count == 2
        assert (await verify(store)).ok

    async def test_read_all_filters_endpoint_events_by_type_and_upstream(
        self, store: EventStore
    ) -> None:
        pod = StreamFactory("checkout", "pod-1")
        await store.append([
            pod.config_applied(["payments", "stock"]),
            endpoints_changed(pod, "payments", added=[ENDPOINT_A, ENDPOINT_B]),
            endpoints_changed(pod, "stock", added=[ENDPOINT_C]),
            endpoint_ejected(pod, "payments", ENDPOINT_A),
            pod.transition("payments", "CLOSED", "OPEN"),
            endpoint_ejected(pod, "stock", ENDPOINT_C),
            endpoint_returned(pod, "payments", ENDPOINT_A),
        ])

        async def positions(f: EventFilter) -> list[int]:
            return [e.global_position for e in await store.read_all(filter=f)]

        assert await positions(EventFilter(types=("EndpointEjected",))) == [4, 6]
        assert await positions(EventFilter(types=("EndpointEjected", "EndpointReturned"),
                                           upstream="payments")) == [4, 7]
        assert await positions(EventFilter(types=("EndpointsChanged",))) == [2, 3]
        assert await positions(EventFilter(upstream="stock")) == [3, 6]
        assert await positions(EventFilter(upstream="payments")) == [2, 4, 5, 7]

    async def test_payloads_with_enum_values_the_proto_does_not_define_are_kept_as_stored(
        self, store: EventStore
    ) -> None:
        producer = StreamFactory("legacy", "pod-1")
        appended = unknown_enum_log(producer)

        await store.append(appended)

        stored = await store.read_all()
        assert [e.as_new_event() for e in stored] == appended
        transition = decode_payload(stored[1].type, stored[1].payload)
        assert isinstance(transition, events_pb2.BreakerTransitioned)
        assert transition.to_state == 99
        ejected = decode_payload(stored[4].type, stored[4].payload)
        assert isinstance(ejected, events_pb2.EndpointEjected)
        assert ejected.reason == 12
        assert (await verify(store)).ok
