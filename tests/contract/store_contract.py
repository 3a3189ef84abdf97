"""The event store contract: one abstract test case that every adapter must pass.

Written once (after ``eventsourcing/tests/persistence.py``) and subclassed per adapter. To run
it against an adapter, subclass ``EventStoreContract`` in a ``test_*.py`` module and provide a
``store`` fixture that yields a fresh, empty, open store and closes it afterwards::

    from tests.contract.store_contract import EventStoreContract

    class TestNatsEventStore(EventStoreContract):
        @pytest.fixture
        async def store(self, nats_server: NatsServer) -> AsyncIterator[EventStore]:
            store = open_store(nats_server.store_url(stream=f"T{uuid.uuid4().hex}"))
            yield store
            await store.close()

The base class name does not start with ``Test``, so pytest collects its tests only through
subclasses. Every test uses the port only (``sidecar.eventlog.port``) and valid chained events
from ``tests.support.events.StreamFactory``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

import pytest

from sidecar import chain
from sidecar.eventlog.port import (
    MAX_READ_LIMIT,
    ChainError,
    ConflictError,
    EventFilter,
    EventStore,
    FollowBatch,
    InvalidEventError,
    NewEvent,
    StoredEvent,
)
from tests.contract.endpoint_contract import EndpointEventsContract
from tests.contract.retention_contract import RetentionContract
from tests.support.events import StreamFactory, rehash

WAKE_BOUND_S = 30.0
"""Generous bound for "the waiter woke up": only a hang makes a test exceed it."""


async def read_everything(store: EventStore, page: int = 7) -> list[StoredEvent]:
    """All events by global position, paging with a small page to exercise pagination."""
    events: list[StoredEvent] = []
    while batch := await store.read_all(
        from_position=events[-1].global_position + 1 if events else 1, limit=page
    ):
        events.extend(batch)
    return events


class EventStoreContract(EndpointEventsContract, RetentionContract):
    """Behaviour every ``EventStore`` adapter must show. Subclasses provide ``store``.

    The endpoint events and unknown enum values are in :mod:`tests.contract.endpoint_contract`.
    """

    # --- appending -----------------------------------------------------------------------

    async def test_appended_events_get_gap_free_positions_and_read_back_unchanged(
        self, store: EventStore
    ) -> None:
        producer = StreamFactory()
        appended = producer.transitions(5)

        outcomes = await store.append(appended)

        assert [o.global_position for o in outcomes] == [1, 2, 3, 4, 5]
        assert [o.version for o in outcomes] == [1, 2, 3, 4, 5]
        assert not any(o.duplicate for o in outcomes)
        stored = await store.read_stream(producer.stream)
        assert [e.as_new_event() for e in stored] == appended
        assert all(e.recorded_at_ns > 0 for e in stored)
        assert await store.head_position() == 5

    async def test_empty_store_has_head_zero_and_no_streams(self, store: EventStore) -> None:
        assert await store.head_position() == 0
        assert await store.streams() == []
        assert await store.read_all() == []
        assert await store.append([]) == []

    async def test_store_seal_when_kept_covers_position_and_record_time(
        self, store: EventStore
    ) -> None:
        await store.append(StreamFactory().transitions(3))

        for event in await store.read_all():
            if event.record_hash:
                assert event.record_hash == chain.compute_record_hash(
                    hash=event.hash,
                    global_position=event.global_position,
                    recorded_at_ns=event.recorded_at_ns,
                )

    # --- idempotency ---------------------------------------------------------------------

    async def test_same_event_again_returns_original_position_and_stores_nothing(
        self, store: EventStore
    ) -> None:
        producer = StreamFactory()
        first, second = producer.transitions(2)
        await store.append([first, second])

        again = await store.append([first])

        assert again[0].global_position == 1
        assert again[0].version == 1
        assert again[0].duplicate
        assert await store.head_position() == 2
        assert len(await store.read_all()) == 2

    async def test_duplicates_are_recognised_forever_not_within_a_window(
        self, store: EventStore
    ) -> None:
        early = StreamFactory("checkout", "early")
        first = early.transition()
        await store.append([first])
        busy = StreamFactory("checkout", "busy")
        for _ in range(30):
            await store.append(busy.transitions(50))

        again = await store.append([first])

        assert again[0].global_position == 1 and again[0].duplicate
        assert await store.head_position() == 1 + 30 * 50

    async def test_retried_batch_returns_original_positions_in_order(
        self, store: EventStore
    ) -> None:
        producer = StreamFactory()
        batch = producer.transitions(4)
        first = await store.append(batch)

        retried = await store.append(batch)

        assert [o.global_position for o in retried] == [o.global_position for o in first]
        assert all(o.duplicate for o in retried)

    async def test_batch_may_mix_stored_and_new_events(self, store: EventStore) -> None:
        producer = StreamFactory()
        events = producer.transitions(4)
        await store.append(events[:2])

        outcomes = await store.append(events)

        assert [(o.global_position, o.duplicate) for o in outcomes] == [
            (1, True),
            (2, True),
            (3, False),
            (4, False),
        ]

    async def test_same_event_id_twice_in_one_batch_is_stored_once(self, store: EventStore) -> None:
        event = StreamFactory().transition()

        outcomes = await store.append([event, event])

        assert outcomes[0].global_position == outcomes[1].global_position == 1
        assert await store.head_position() == 1

    async def test_known_event_id_with_different_content_is_a_conflict(
        self, store: EventStore
    ) -> None:
        event = StreamFactory().transition(trace_id="")
        await store.append([event])
        altered = rehash(event, trace_id="4bf92f3577b34da6a3ce929d0e0e4736")

        with pytest.raises(ConflictError) as caught:
            await store.append([altered])

        assert caught.value.existing_event_id == event.event_id
        assert "trace_id" in str(caught.value)
        assert await store.head_position() == 1

    async def test_different_event_at_existing_version_is_a_conflict_naming_expected_and_actual(
        self, store: EventStore
    ) -> None:
        producer = StreamFactory()
        stored = producer.transitions(3)
        await store.append(stored)
        rival_producer = StreamFactory()  # same stream, forked from scratch
        rival = rival_producer.transition("inventory")

        with pytest.raises(ConflictError) as caught:
            await store.append([rival])

        error = caught.value
        assert (error.stream, error.version) == (producer.stream, 1)
        assert error.event_id == rival.event_id
        assert error.existing_event_id == stored[0].event_id
        assert "0" in error.expected and "3" in error.actual
        assert stored[0].event_id in str(error)

    # --- the chain -----------------------------------------------------------------------

    async def test_skipped_version_is_a_chain_error(self, store: EventStore) -> None:
        producer = StreamFactory()
        first, _skipped, third = producer.transitions(3)
        await store.append([first])

        with pytest.raises(ChainError) as caught:
            await store.append([third])

        assert caught.value.version == 3
        assert await store.head_position() == 1

    async def test_first_event_of_a_stream_must_be_version_one(self, store: EventStore) -> None:
        producer = StreamFactory()
        producer.transition()
        second = producer.transition()

        with pytest.raises(ChainError):
            await store.append([second])

    async def test_prev_hash_not_matching_the_stream_head_is_a_chain_error(
        self, store: EventStore
    ) -> None:
        producer = StreamFactory()
        first, second = producer.transitions(2)
        await store.append([first])
        forged = rehash(second, prev_hash=bytes(range(32)))

        with pytest.raises(ChainError) as caught:
            await store.append([forged])

        assert "prev_hash" in str(caught.value)
        assert (caught.value.stream, caught.value.version) == (producer.stream, 2)

    async def test_hash_not_matching_the_content_is_a_chain_error(self, store: EventStore) -> None:
        event = StreamFactory().transition()
        forged = dataclasses.replace(event, occurred_at_ns=event.occurred_at_ns + 1)

        with pytest.raises(ChainError) as caught:
            await store.append([forged])

        assert "hash" in str(caught.value)
        assert await store.head_position() == 0

    async def test_malformed_field_is_refused_naming_the_field(self, store: EventStore) -> None:
        event = StreamFactory().transition()
        cases: list[tuple[NewEvent, str]] = [
            (rehash(event, event_id="not-a-uuid"), "event_id"),
            (rehash(event, trace_id="XYZ"), "trace_id"),
            (dataclasses.replace(event, prev_hash=b"short"), "prev_hash"),
            (rehash(event, stream=""), "stream"),
        ]
        for bad, field in cases:
            with pytest.raises(InvalidEventError) as caught:
                await store.append([bad])
            assert caught.value.field == field
        assert await store.head_position() == 0

    async def test_unset_occurred_at_and_one_out_of_range_are_refused_for_different_reasons(
        self, store: EventStore
    ) -> None:
        event = StreamFactory().transition()
        cases: list[tuple[NewEvent, str]] = [
            (rehash(event, occurred_at_ns=0), "must be set"),
            (rehash(event, occurred_at_ns=-1_000_000_000), "1969-12-31T23:59:59Z"),
            # beyond 64-bit nanoseconds the chain cannot even hash it: the check comes first
            (dataclasses.replace(event, occurred_at_ns=2**63), "2262-04-11T23:47:16"),
        ]
        for bad, reason in cases:
            with pytest.raises(InvalidEventError) as caught:
                await store.append([bad])
            assert caught.value.field == "occurred_at"
            assert reason in caught.value.problem
        assert "must be set" not in str(caught.value)
        assert await store.head_position() == 0

    # --- atomic batches ------------------------------------------------------------------

    async def test_batch_with_one_bad_event_stores_none_of_it(self, store: EventStore) -> None:
        producer = StreamFactory()
        good = producer.transitions(3)
        other = StreamFactory("checkout", "pod-2")
        bad_last = dataclasses.replace(other.transitions(2)[1], hash=bytes(32))

        with pytest.raises(ChainError):
            await store.append([*good, bad_last])

        assert await store.head_position() == 0
        assert await store.read_stream(producer.stream) == []
        outcomes = await store.append(good)  # positions were given back: still gap-free
        assert [o.global_position for o in outcomes] == [1, 2, 3]

    async def test_refused_batch_does_not_disturb_concurrent_good_batches(
        self, store: EventStore
    ) -> None:
        producers = [StreamFactory("svc", f"pod-{i}") for i in range(6)]
        batches = [p.transitions(5) for p in producers]
        broken = dataclasses.replace(batches[2][3], hash=bytes(32))
        batches[2][3] = broken

        results = await asyncio.gather(*(store.append(b) for b in batches), return_exceptions=True)

        assert isinstance(results[2], ChainError)
        assert all(isinstance(r, list) for i, r in enumerate(results) if i != 2)
        everything = await read_everything(store)
        assert [e.global_position for e in everything] == list(range(1, 26))
        assert producers[2].stream not in {e.stream for e in everything}

    # --- concurrency ---------------------------------------------------------------------

    async def test_concurrent_appenders_get_gap_free_positions_and_keep_stream_order(
        self, store: EventStore
    ) -> None:
        producers = [StreamFactory("svc", f"pod-{i}") for i in range(8)]
        per_producer = [[p.transitions(4) for _ in range(10)] for p in producers]

        async def produce(batches: list[list[NewEvent]]) -> None:
            for batch in batches:
                await store.append(batch)

        await asyncio.gather(*(produce(b) for b in per_producer))

        everything = await read_everything(store, page=50)
        assert [e.global_position for e in everything] == list(range(1, 8 * 40 + 1))
        assert len({e.event_id for e in everything}) == len(everything)
        for producer in producers:
            stream = [e for e in everything if e.stream == producer.stream]
            assert [e.version for e in stream] == list(range(1, 41))

    async def test_same_event_appended_concurrently_is_stored_once(self, store: EventStore) -> None:
        event = StreamFactory().transition()

        outcomes = await asyncio.gather(*(store.append([event]) for _ in range(10)))

        assert {o[0].global_position for o in outcomes} == {1}
        assert sum(not o[0].duplicate for o in outcomes) == 1
        assert await store.head_position() == 1

    # --- reads ---------------------------------------------------------------------------

    async def test_read_stream_starts_at_a_version_and_honours_the_limit(
        self, store: EventStore
    ) -> None:
        producer = StreamFactory()
        await store.append(producer.transitions(10))
        await store.append(StreamFactory("other", "x").transitions(3))

        page = await store.read_stream(producer.stream, from_version=4, limit=3)

        assert [e.version for e in page] == [4, 5, 6]
        assert {e.stream for e in page} == {producer.stream}
        assert await store.read_stream("nobody/none") == []

    async def test_read_all_pages_through_every_stream_by_position(self, store: EventStore) -> None:
        a, b = StreamFactory("svc", "a"), StreamFactory("svc", "b")
        for _ in range(5):
            await store.append(a.transitions(3))
            await store.append(b.transitions(2))

        first = await store.read_all(from_position=1, limit=10)
        rest = await store.read_all(from_position=first[-1].global_position + 1, limit=100)

        assert [e.global_position for e in first + rest] == list(range(1, 26))
        assert await store.read_all(from_position=26) == []

    async def test_read_all_filters_by_service_instance_upstream_type_and_time(
        self, store: EventStore
    ) -> None:
        t0 = 1_800_000_000_000_000_000
        checkout = StreamFactory("checkout", "pod-1", start_ns=t0)
        checkout2 = StreamFactory("checkout", "pod-2", start_ns=t0)
        billing = StreamFactory("billing", "pod-1", start_ns=t0)
        await store.append(
            [
                checkout.config_applied(["payments", "stock"], at_ns=t0 + 1),
                checkout.transition("payments", "CLOSED", "OPEN", at_ns=t0 + 2),
                checkout.transition("stock", "CLOSED", "OPEN", at_ns=t0 + 3),
                checkout.mode_changed("payments", at_ns=t0 + 4),
            ]
        )
        await store.append([checkout2.transition("payments", at_ns=t0 + 5)])
        await store.append([billing.transition("payments", at_ns=t0 + 6)])

        async def positions(f: EventFilter) -> list[int]:
            return [e.global_position for e in await store.read_all(filter=f)]

        assert await positions(EventFilter(service="checkout")) == [1, 2, 3, 4, 5]
        assert await positions(EventFilter(service="checkout", instance="pod-2")) == [5]
        assert await positions(EventFilter(upstream="payments")) == [2, 4, 5, 6]
        assert await positions(EventFilter(service="checkout", upstream="stock")) == [3]
        assert await positions(EventFilter(types=("ConfigApplied",))) == [1]
        assert await positions(EventFilter(types=("BreakerModeChanged", "ConfigApplied"))) == [1, 4]
        assert await positions(EventFilter(from_time_ns=t0 + 3, to_time_ns=t0 + 5)) == [3, 4]
        assert await positions(EventFilter(from_time_ns=t0 + 6)) == [6]
        assert await positions(EventFilter(service="nobody")) == []

    async def test_read_bounds_beyond_64_bits_read_nothing_or_everything_without_failing(
        self, store: EventStore
    ) -> None:
        producer = StreamFactory()
        await store.append(producer.transitions(2))
        far, before = 10**20, -(10**20)  # year ~5138 and ~-1200 in nanoseconds

        async def positions(**kwargs: object) -> list[int]:
            return [e.global_position for e in await store.read_all(**kwargs)]  # type: ignore[arg-type]

        assert await positions(from_position=2**64) == []
        assert await store.read_stream(producer.stream, from_version=2**64) == []
        assert await positions(filter=EventFilter(from_time_ns=far)) == []
        assert await positions(filter=EventFilter(to_time_ns=far)) == [1, 2]
        assert await positions(filter=EventFilter(from_time_ns=before)) == [1, 2]
        assert await positions(filter=EventFilter(to_time_ns=before)) == []

    async def test_filtered_read_all_pages_by_position(self, store: EventStore) -> None:
        a, b = StreamFactory("svc", "a"), StreamFactory("svc", "b")
        for _ in range(6):
            await store.append([a.transition("payments"), b.transition("stock")])
        only_stock = EventFilter(upstream="stock")

        first = await store.read_all(limit=4, filter=only_stock)
        rest = await store.read_all(
            from_position=first[-1].global_position + 1, limit=100, filter=only_stock
        )

        assert [e.global_position for e in first + rest] == [2, 4, 6, 8, 10, 12]

    async def test_streams_lists_every_stream_sorted(self, store: EventStore) -> None:
        for service, instance in [("b", "2"), ("a", "1"), ("b", "1")]:
            await store.append([StreamFactory(service, instance).transition()])

        assert await store.streams() == ["a/1", "b/1", "b/2"]

    async def test_read_limit_outside_bounds_is_refused(self, store: EventStore) -> None:
        for limit in (0, MAX_READ_LIMIT + 1):
            with pytest.raises(ValueError, match="limit"):
                await store.read_all(limit=limit)
            with pytest.raises(ValueError, match="limit"):
                await store.read_stream("a/b", limit=limit)

    # --- checkpoints ---------------------------------------------------------------------

    async def test_checkpoints_round_trip_and_are_replaced(self, store: EventStore) -> None:
        assert await store.load_checkpoint("status") is None

        await store.save_checkpoint("status", 0, b"{}")
        await store.save_checkpoint("status", 42, b'{"x": 1}')
        await store.save_checkpoint("other", 7, b"\x00\xff")

        assert await store.load_checkpoint("status") == (42, b'{"x": 1}')
        assert await store.load_checkpoint("other") == (7, b"\x00\xff")

    # --- waiting for appends -------------------------------------------------------------

    async def test_wait_for_append_wakes_when_an_event_is_appended(self, store: EventStore) -> None:
        waiter = asyncio.create_task(store.wait_for_append(0, timeout_s=WAKE_BOUND_S * 4))
        await asyncio.sleep(0)  # let the waiter register

        await store.append([StreamFactory().transition()])

        assert await asyncio.wait_for(waiter, WAKE_BOUND_S) == 1

    async def test_wait_for_append_returns_at_once_when_already_past(
        self, store: EventStore
    ) -> None:
        await store.append(StreamFactory().transitions(3))

        head = await asyncio.wait_for(store.wait_for_append(1, timeout_s=WAKE_BOUND_S * 4), 5)

        assert head == 3

    async def test_wait_for_append_returns_the_head_on_timeout(self, store: EventStore) -> None:
        await store.append(StreamFactory().transitions(2))

        assert await store.wait_for_append(2, timeout_s=0.05) == 2

    # --- following the log ---------------------------------------------------------------

    async def test_follow_catches_up_then_delivers_live_appends_each_once_in_order(
        self, store: EventStore
    ) -> None:
        producers = [StreamFactory("follow", f"pod-{i}") for i in range(2)]
        for producer in producers:
            await store.append(producer.transitions(120))  # 240 to catch up on

        async def append_live() -> None:
            for i in range(20):
                await store.append(producers[i % 2].transitions(8))

        received: list[StoredEvent] = []
        batches: list[FollowBatch] = []
        appender: asyncio.Task[None] | None = None
        async with asyncio.timeout(WAKE_BOUND_S), contextlib.aclosing(
            store.follow(1, page_events=50, wait_s=0.05)
        ) as feed:
            async for batch in feed:
                batches.append(batch)
                received.extend(batch.events)
                if appender is None:  # appends race the catch-up and the switch to live
                    appender = asyncio.create_task(append_live())
                if len(received) >= 400:
                    break
        assert appender is not None
        await appender

        assert [e.global_position for e in received] == list(range(1, 401))
        for producer in producers:
            versions = [e.version for e in received if e.stream == producer.stream]
            assert versions == list(range(1, 201))
        assert batches[-1].scanned_to == 401 and batches[-1].live
        assert all(len(b.events) <= 50 for b in batches)
        assert all(b.head >= b.scanned_to - 1 for b in batches)

    async def test_follow_with_a_filter_delivers_matches_and_a_cursor_that_resumes_exactly(
        self, store: EventStore
    ) -> None:
        checkout, cart = StreamFactory("checkout", "pod-1"), StreamFactory("cart", "pod-1")
        only_cart = EventFilter(service="cart", types=("BreakerTransitioned",))
        await store.append([*checkout.transitions(3), *cart.transitions(2)])

        async def take(from_position: int, count: int) -> tuple[list[StoredEvent], int]:
            events: list[StoredEvent] = []
            async with asyncio.timeout(WAKE_BOUND_S), contextlib.aclosing(
                store.follow(from_position, only_cart, page_events=2, wait_s=0.05)
            ) as feed:
                async for batch in feed:
                    events.extend(batch.events)
                    if len(events) >= count and batch.live:
                        return events, batch.scanned_to
            raise AssertionError("follow ended")

        first, cursor = await take(1, 2)
        await store.append([
            checkout.transition(), cart.mode_changed(), cart.transition(), checkout.transition(),
        ])
        second, _ = await take(cursor, 1)

        assert [(e.service, e.version) for e in first] == [("cart", 1), ("cart", 2)]
        assert [(e.service, e.type, e.version) for e in second] == [
            ("cart", "BreakerTransitioned", 4)
        ]

    async def test_follow_past_the_head_is_live_at_once_and_signals_while_idle(
        self, store: EventStore
    ) -> None:
        batches: list[FollowBatch] = []
        async with asyncio.timeout(WAKE_BOUND_S), contextlib.aclosing(
            store.follow(1, wait_s=0.05)
        ) as feed:
            async for batch in feed:
                batches.append(batch)
                if len(batches) == 2:
                    await store.append([StreamFactory().transition()])
                if batch.events:
                    break

        assert batches[0] == FollowBatch((), 1, 0, True)
        assert batches[1].events == () and batches[1].live  # nothing within the wait
        assert [e.global_position for e in batches[-1].events] == [1]
        assert batches[-1].scanned_to == 2
