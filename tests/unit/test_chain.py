"""The hash chain wire contract: unambiguous canonical bytes, a pinned known answer, and the
same hash from the protobuf envelope as from the store record."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar import chain
from sidecar.eventlog.event_protos import new_event_from_proto, to_proto
from tests.support.events import StreamFactory

FIELDS = {
    "prev_hash": chain.GENESIS_HASH,
    "stream": "checkout/pod-1",
    "version": 1,
    "event_id": "01890a5d-ac96-774b-bcce-b302099a8057",
    "type": "BreakerTransitioned",
    "occurred_at_ns": 1_700_000_000_123_456_789,
    "trace_id": "0af7651916cd43dd8448eb211c80319c",
    "payload": b"\n\x08checkout",
}


def test_genesis_hash_is_32_zero_bytes() -> None:
    assert chain.GENESIS_HASH == b"\x00" * 32


def test_known_answer_pins_the_wire_format() -> None:
    # Any change to the canonical encoding breaks every stored chain: this must never change.
    expected = hashlib.sha256(
        b"sidecar.v1.Event\x00"
        + b"\x00" * 32
        + b"\x00\x00\x00\x0echeckout/pod-1"
        + (1).to_bytes(8, "big")
        + b"\x00\x00\x00\x2401890a5d-ac96-774b-bcce-b302099a8057"
        + b"\x00\x00\x00\x13BreakerTransitioned"
        + (1_700_000_000_123_456_789).to_bytes(8, "big", signed=True)
        + b"\x00\x00\x00\x200af7651916cd43dd8448eb211c80319c"
        + b"\x00\x00\x00\x0a\n\x08checkout"
    ).digest()

    assert chain.compute_hash(**FIELDS) == expected  # type: ignore[arg-type]


def test_moving_a_character_between_adjacent_fields_changes_the_hash() -> None:
    a = dict(FIELDS, stream="checkout/pod-1", event_id="x")
    b = dict(FIELDS, stream="checkout/pod-", event_id="1x")

    assert chain.compute_hash(**a) != chain.compute_hash(**b)  # type: ignore[arg-type]


text = st.text(max_size=12)
field_tuples = st.tuples(
    st.binary(min_size=32, max_size=32),
    text,
    st.integers(0, 2**64 - 1),
    text,
    text,
    st.integers(-(2**63), 2**63 - 1),
    text,
    st.binary(max_size=12),
)


@given(field_tuples, field_tuples)
def test_different_fields_never_give_the_same_canonical_bytes(
    a: tuple[object, ...], b: tuple[object, ...]
) -> None:
    names = list(FIELDS)
    bytes_a = chain.canonical_bytes(**dict(zip(names, a, strict=True)))  # type: ignore[arg-type]
    bytes_b = chain.canonical_bytes(**dict(zip(names, b, strict=True)))  # type: ignore[arg-type]

    assert (bytes_a == bytes_b) == (a == b)


def test_a_prev_hash_of_the_wrong_length_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="prev_hash"):
        chain.compute_hash(**dict(FIELDS, prev_hash=b"short"))  # type: ignore[arg-type]


def test_envelope_and_record_hash_alike_and_round_trip() -> None:
    producer = StreamFactory()
    record = producer.transition()
    envelope = to_proto(record)

    assert chain.proto_hash(envelope) == record.hash == chain.hash_of(record)
    assert new_event_from_proto(envelope) == record


def test_changing_the_payload_of_an_envelope_changes_its_hash() -> None:
    envelope = to_proto(StreamFactory().transition())
    before = chain.proto_hash(envelope)

    envelope.breaker_transitioned.reason = "slow_call_rate"

    assert chain.proto_hash(envelope) != before
