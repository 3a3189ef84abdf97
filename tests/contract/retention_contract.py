"""The store contract for retention: ``cut`` deletes a stream prefix and leaves an anchor.

A mixin of :class:`tests.contract.store_contract.EventStoreContract`, so every adapter that runs
the contract (SQLite, NATS JetStream on one and three nodes) runs these too. The ``store``
fixture must allow cuts.
"""

from __future__ import annotations

import pytest

from sidecar.eventlog.audit import verify
from sidecar.eventlog.port import BeforeAnchorError, ChainError, EventStore
from tests.support.events import StreamFactory, rehash

CUT_AT_NS = 1_800_000_000_000_000_000


async def _positions(store: EventStore) -> list[int]:
    from tests.contract.store_contract import read_everything

    return [event.global_position for event in await read_everything(store)]


class RetentionContract:
    """What every adapter's ``cut`` and ``anchors`` must do."""

    async def test_cut_deletes_the_prefix_and_anchors_the_stream_at_its_last_deleted_event(
        self, store: EventStore
    ) -> None:
        kept_producer = StreamFactory(instance="pod-a")
        cut_producer = StreamFactory(instance="pod-b")
        await store.append(kept_producer.transitions(2))
        cut_events = cut_producer.transitions(5)
        outcomes = await store.append(cut_events)

        anchor = await store.cut(cut_producer.stream, 3, CUT_AT_NS)

        assert (anchor.stream, anchor.version, anchor.hash) == (cut_producer.stream, 3,
                                                                cut_events[2].hash)
        assert anchor.global_position == outcomes[2].global_position
        assert anchor.cut_at_ns == CUT_AT_NS and anchor.recorded_at_ns > 0
        assert await store.anchors() == {cut_producer.stream: anchor}
        assert [e.version for e in await store.read_stream(cut_producer.stream)] == [4, 5]
        assert await _positions(store) == [1, 2, 6, 7]
        assert await store.head_position() == 7
        assert await store.streams() == sorted([kept_producer.stream, cut_producer.stream])
        assert (await verify(store)).ok

    async def test_append_at_or_below_the_anchor_is_refused_and_never_stored_twice(
        self, store: EventStore
    ) -> None:
        producer = StreamFactory()
        events = producer.transitions(4)
        await store.append(events)
        await store.cut(producer.stream, 2, CUT_AT_NS)

        for deleted in events[:2]:  # a retry of a deleted event: its id is gone, the anchor holds
            with pytest.raises(BeforeAnchorError, match="before the retention anchor") as refused:
                await store.append([deleted])
            assert isinstance(refused.value, ChainError)
        with pytest.raises(BeforeAnchorError):  # a different event at a deleted version
            await store.append([rehash(events[1], trace_id="f" * 32)])

        assert [e.version for e in await store.read_stream(producer.stream)] == [3, 4]
        again = await store.append([events[3]])  # a kept event is still a duplicate
        assert again[0].duplicate

    async def test_a_stream_cut_whole_keeps_its_head_and_chains_on_from_the_anchor(
        self, store: EventStore
    ) -> None:
        producer = StreamFactory()
        await store.append(producer.transitions(3))

        anchor = await store.cut(producer.stream, 3, CUT_AT_NS)

        assert await store.read_stream(producer.stream) == []
        assert await store.streams() == [producer.stream]
        assert await store.head_position() == 3  # positions are never given again
        wrong = StreamFactory()  # version 1 after genesis: before the anchor
        with pytest.raises(BeforeAnchorError):
            await store.append(wrong.transitions(1))
        following = producer.transitions(1)[0]
        assert following.prev_hash == anchor.hash
        outcome = await store.append([following])
        assert (outcome[0].version, outcome[0].global_position) == (4, 4)
        assert (await verify(store)).ok

    async def test_the_newest_positions_deleted_are_not_given_again(
        self, store: EventStore
    ) -> None:
        old, new = StreamFactory(instance="pod-old"), StreamFactory(instance="pod-new")
        await store.append(old.transitions(2))
        await store.append(new.transitions(2))
        await store.cut(new.stream, 2, CUT_AT_NS)

        outcome = await store.append(old.transitions(1))

        assert outcome[0].global_position == 5
        assert await _positions(store) == [1, 2, 5]
        assert (await verify(store)).ok

    async def test_cut_never_moves_an_anchor_back_nor_past_the_head(
        self, store: EventStore
    ) -> None:
        producer = StreamFactory()
        await store.append(producer.transitions(4))
        first = await store.cut(producer.stream, 3, CUT_AT_NS)

        assert await store.cut(producer.stream, 2, CUT_AT_NS + 1) == first
        assert await store.cut(producer.stream, 3, CUT_AT_NS + 1) == first
        with pytest.raises(ValueError, match="through_version"):
            await store.cut(producer.stream, 5, CUT_AT_NS)
        with pytest.raises(ValueError, match="through_version"):
            await store.cut("nobody/none", 1, CUT_AT_NS)
        assert [e.version for e in await store.read_stream(producer.stream)] == [4]

    async def test_a_second_cut_moves_the_anchor_on_and_the_chain_verifies_from_it(
        self, store: EventStore
    ) -> None:
        producer = StreamFactory()
        events = producer.transitions(6)
        await store.append(events)
        await store.cut(producer.stream, 2, CUT_AT_NS)
        second = await store.cut(producer.stream, 4, CUT_AT_NS + 1)

        report = await verify(store)

        assert (second.version, second.hash) == (4, events[3].hash)
        assert await store.anchors() == {producer.stream: second}

        assert report.ok, report.summary()
        assert report.events_checked == 2
        assert [e.version for e in await store.read_stream(producer.stream, 1)] == [5, 6]

    async def test_stream_head_is_the_last_event_or_the_anchor_of_a_stream_cut_whole(
        self, store: EventStore
    ) -> None:
        producer = StreamFactory()
        assert await store.stream_head(producer.stream) == (0, b"")
        events = producer.transitions(3)
        await store.append(events)
        assert await store.stream_head(producer.stream) == (3, events[2].hash)

        anchor = await store.cut(producer.stream, 3, CUT_AT_NS)

        assert await store.stream_head(producer.stream) == (3, anchor.hash)
        following = producer.transitions(1)
        await store.append(following)
        assert await store.stream_head(producer.stream) == (4, following[0].hash)
