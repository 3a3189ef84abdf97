"""Subscriptions: catch-up then live with no gap and no duplicate, filters, bounded buffers.

Runs against the real SQLite store in a temp dir (the reader relies on its wait_for_append).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from sidecar.eventlog.api.subscription import SubscriberTooSlow, Subscription
from sidecar.eventlog.port import EventFilter, EventStore, StoredEvent
from sidecar.eventlog.sqlite.store import SqliteEventStore
from tests.support.events import StreamFactory

GET_TIMEOUT_S = 5.0  # generous: only reached if the subscription misbehaves


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    store = SqliteEventStore(tmp_path / "events.db")
    yield store
    await store.close()


async def _running(sub: Subscription) -> asyncio.Task[None]:
    return asyncio.create_task(sub.run())


async def _until(predicate: Callable[[], bool], timeout_s: float = GET_TIMEOUT_S) -> None:
    """Yield to the loop until ``predicate()`` holds. Store reads run on threads, so a count
    of loop turns is not enough on a loaded machine; the wall-clock bound only ends a hang."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition never became true")
        await asyncio.sleep(0.001)


async def test_catch_up_then_live_delivers_every_event_once_in_order(store: EventStore) -> None:
    producer = StreamFactory("checkout", "pod-1")
    await store.append(producer.transitions(250))
    sub = Subscription(store, 1, buffer_events=1000, page_events=40, live_wait_s=0.05)
    reader = await _running(sub)

    async def append_live() -> None:
        for _ in range(25):
            await store.append(producer.transitions(10))

    appender = asyncio.create_task(append_live())
    received: list[StoredEvent] = []
    while len(received) < 500:
        event = await sub.get(GET_TIMEOUT_S)
        assert event is not None, f"stalled after {len(received)} events"
        received.append(event)
    await appender
    reader.cancel()

    assert [e.global_position for e in received] == list(range(1, 501))
    assert sub.live


async def test_subscription_from_a_position_starts_there(store: EventStore) -> None:
    await store.append(StreamFactory().transitions(30))
    sub = Subscription(store, 21, page_events=7)
    reader = await _running(sub)

    received = [await sub.get(GET_TIMEOUT_S) for _ in range(10)]
    reader.cancel()

    assert [e.global_position for e in received if e] == list(range(21, 31))


async def test_filtered_subscription_gets_only_matching_events(store: EventStore) -> None:
    checkout, cart = StreamFactory("checkout", "pod-1"), StreamFactory("cart", "pod-1")
    for _ in range(5):
        await store.append(checkout.transitions(3) + cart.transitions(2))
    sub = Subscription(store, 1, EventFilter(service="cart"), page_events=3)
    reader = await _running(sub)

    received = [await sub.get(GET_TIMEOUT_S) for _ in range(10)]
    reader.cancel()

    assert all(e is not None and e.service == "cart" for e in received)
    assert len({e.global_position for e in received if e}) == 10


async def test_no_event_within_the_timeout_means_heartbeat_time(store: EventStore) -> None:
    sub = Subscription(store, 1, live_wait_s=0.01)
    reader = await _running(sub)

    assert await sub.get(0.02) is None
    reader.cancel()


async def test_resume_position_skips_positions_the_filter_already_passed_over(
    store: EventStore,
) -> None:
    await store.append(StreamFactory("checkout", "pod-1").transitions(5))
    sub = Subscription(store, 1, EventFilter(service="cart"), live_wait_s=0.01)
    reader = await _running(sub)
    await _until(lambda: sub.live)

    assert await sub.get(0.01) is None
    assert sub.resume_position(last_sent_position=0) == 6
    reader.cancel()


async def test_catch_up_waits_for_room_instead_of_dropping_a_slow_reader(
    store: EventStore,
) -> None:
    await store.append(StreamFactory().transitions(100))
    sub = Subscription(store, 1, buffer_events=10, page_events=50)
    reader = await _running(sub)
    await _until(lambda: sub.buffered == 5)
    for _ in range(50):  # the reader gets turns but keeps half the buffer free
        await asyncio.sleep(0)
    assert sub.buffered == 5 and not sub.ended.is_set()

    received = [await sub.get(GET_TIMEOUT_S) for _ in range(100)]
    reader.cancel()

    assert [e.global_position for e in received if e] == list(range(1, 101))


async def test_live_subscriber_that_stops_consuming_is_ended_as_too_slow(
    store: EventStore,
) -> None:
    producer = StreamFactory()
    await store.append(producer.transitions(3))
    sub = Subscription(store, 1, buffer_events=10, page_events=5, live_wait_s=0.05)
    reader = await _running(sub)
    first = await sub.get(GET_TIMEOUT_S)
    assert first is not None and first.global_position == 1
    await _until(lambda: sub.live)

    for _ in range(4):  # 2 still buffered + 20 new > 10
        await store.append(producer.transitions(5))
    await asyncio.wait_for(sub.ended.wait(), GET_TIMEOUT_S)
    await reader

    assert sub.resume_position(last_sent_position=1) == 2
    assert isinstance(sub.end_reason, SubscriberTooSlow)
    with pytest.raises(SubscriberTooSlow, match="more than 10 events behind"):
        while True:  # what was buffered may still be drained; then the reason surfaces
            await sub.get(GET_TIMEOUT_S)
