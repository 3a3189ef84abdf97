"""Pure parts of retention on JetStream: the anchor book, the anchor encoding, the URL flag."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.eventlog.nats import NatsSettings
from sidecar.eventlog.nats.retention import (
    AnchorBook,
    anchor_key,
    decode_anchor,
    encode_anchor,
    purge_denied,
)
from sidecar.eventlog.port import RetentionAnchor, StoredEvent, StoreError
from tests.support.events import StreamFactory

STREAMS = ("checkout/pod-1", "checkout/pod-2", "payments")


def _anchor(stream: str, version: int, position: int | None = None) -> RetentionAnchor:
    return RetentionAnchor(stream, version, bytes([version % 256]) * 32,
                           position if position is not None else version * 10, 5, 6)


@given(st.lists(st.tuples(st.sampled_from(STREAMS), st.integers(1, 50)), max_size=30))
def test_the_book_keeps_each_streams_highest_anchor_whatever_the_order_it_learns_them(
    learnt: list[tuple[str, int]],
) -> None:
    book = AnchorBook()
    for stream, version in learnt:
        in_force = book.merge(_anchor(stream, version))
        assert in_force.version >= version  # an anchor never moves back

    highest = {s: max(v for t, v in learnt if t == s) for s, _ in learnt}
    assert {s: a.version for s, a in book.snapshot().items()} == highest
    assert book.highest_position == max((v * 10 for v in highest.values()), default=0)
    assert bool(book) == bool(learnt)


@given(st.integers(1, 20), st.integers(1, 40))
def test_the_book_hides_exactly_the_versions_at_or_below_the_anchor(
    anchor_version: int, event_version: int
) -> None:
    book = AnchorBook()
    book.merge(_anchor("checkout/pod-1", anchor_version))
    event = StoredEvent.of(StreamFactory().transitions(event_version)[-1], 1, 1)
    other = StoredEvent.of(StreamFactory(instance="pod-2").transitions(1)[0], 2, 1)

    assert book.hides(event) == (event_version <= anchor_version)
    assert not book.hides(other)  # another stream: never hidden


def test_gaps_are_explained_only_at_or_below_the_highest_anchor_position() -> None:
    book = AnchorBook()
    assert not book.explains_gap(1)
    book.merge(_anchor("checkout/pod-1", 3, position=7))
    book.merge(_anchor("payments", 2, position=4))

    assert book.explains_gap(7) and book.explains_gap(5)
    assert not book.explains_gap(8)


def test_an_anchor_round_trips_and_an_unreadable_one_names_its_key() -> None:
    anchor = _anchor("checkout/pod-1", 3)

    assert decode_anchor("k", encode_anchor(anchor)) == anchor
    with pytest.raises(StoreError, match=r"retention anchor '=anchor\.x\.y'"):
        decode_anchor("=anchor.x.y", b'{"format": 9}')
    with pytest.raises(StoreError, match="unreadable"):
        decode_anchor("=anchor.x.y", b"not json")


def test_anchor_keys_never_collide_with_checkpoint_keys() -> None:
    key = anchor_key("Y2hlY2tvdXQ.cG9kLTE")

    assert key == "=anchor.Y2hlY2tvdXQ.cG9kLTE"
    assert key.startswith("=")  # checkpoint keys are base64url tokens, "=" only alone


def test_the_deny_purge_refusal_is_one_line_naming_the_stream_and_the_fix() -> None:
    message = str(purge_denied("EVENTLOG"))

    assert "\n" not in message
    assert "'EVENTLOG'" in message and "deny_purge" in message and "retention=1" in message


def test_the_retention_url_option_is_a_flag_and_a_bad_value_names_it() -> None:
    assert NatsSettings.from_url("nats://127.0.0.1:4222").retention is False
    assert NatsSettings.from_url("nats://127.0.0.1:4222?retention=1").retention is True
    assert NatsSettings.from_url("nats://127.0.0.1:4222?retention=false").retention is False
    with pytest.raises(ValueError, match="retention: 'maybe' is not a valid value"):
        NatsSettings.from_url("nats://127.0.0.1:4222?retention=maybe")
