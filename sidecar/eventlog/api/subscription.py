"""One subscriber's view of the log: catch-up from a position, then live, with a bounded buffer.

A reader task follows the log through ``EventStore.follow`` (one cursor by global position, so
the switch from catch-up to live cannot skip or repeat an event: see ``FollowBatch``) and fills
a bounded buffer; the gRPC handler takes events from it and writes them to the client. How the
store feeds it is the adapter's business: ``read_all`` pages and ``wait_for_append`` by default
(SQLite), ``read_all`` pages then a JetStream ordered consumer on NATS.

Back-pressure and slow subscribers:

- While catching up, the reader keeps at most half the buffer filled and waits for room
  otherwise (holding at most one batch of ``page_events`` besides): the store holds the
  backlog, not server memory, and a subscriber that switches to live starts with at least
  half the buffer free for bursts.
- Once live, new events are pushed without waiting. When the buffer is full the subscriber is
  more than ``buffer_events`` behind the live log: the subscription stops with
  :class:`SubscriberTooSlow`, and the handler ends the call with RESOURCE_EXHAUSTED and the
  position to resume from (the client re-subscribes and catches up from the store).

Threading: everything runs on the server's event loop; ``run`` is the reader task, ``get`` is
called by the one handler coroutine that owns the subscription.

Example::

    sub = Subscription(store, from_position=1, event_filter=EventFilter(service="checkout"))
    reader = asyncio.create_task(sub.run())
    event = await sub.get(timeout_s=5.0)     # None: nothing within 5 s, send a heartbeat
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence

from sidecar.eventlog.port import NO_FILTER, EventFilter, EventStore, StoredEvent
from sidecar.eventlog.settings import (
    DEFAULT_LIVE_WAIT_S,
    DEFAULT_SUBSCRIBE_PAGE_EVENTS,
    DEFAULT_SUBSCRIBER_BUFFER_EVENTS,
)


class SubscriptionEnded(Exception):
    """The subscription cannot go on; the handler ends the call."""


class SubscriberTooSlow(SubscriptionEnded):
    """The live log got ``buffer_events`` ahead of what the subscriber consumed."""

    def __init__(self, buffer_events: int) -> None:
        super().__init__(f"subscriber fell more than {buffer_events} events behind the live log")
        self.buffer_events = buffer_events


class SubscriptionFailed(SubscriptionEnded):
    """Reading the store failed (the cause is chained)."""


class Subscription:
    """Catch-up-then-live reader for one subscriber (see the module docstring)."""

    def __init__(
        self,
        store: EventStore,
        from_position: int,
        event_filter: EventFilter = NO_FILTER,
        *,
        buffer_events: int = DEFAULT_SUBSCRIBER_BUFFER_EVENTS,
        page_events: int = DEFAULT_SUBSCRIBE_PAGE_EVENTS,
        live_wait_s: float = DEFAULT_LIVE_WAIT_S,
    ) -> None:
        if from_position < 1:
            raise ValueError(f"from_position: must be >= 1, got {from_position}")
        if buffer_events < 1 or page_events < 1 or live_wait_s <= 0:
            raise ValueError("buffer_events, page_events and live_wait_s must be positive")
        self._store = store
        self._filter = event_filter
        self._buffer_events = buffer_events
        self._page_events = page_events
        self._live_wait_s = live_wait_s
        self._items: deque[StoredEvent] = deque()
        self._wakeup = asyncio.Event()  # set by the reader: items, end
        self._room = asyncio.Event()  # set by the consumer: an item was taken
        self.ended = asyncio.Event()
        """Set when the subscription stopped (too slow or failed); ``get`` then raises."""
        self._end: SubscriptionEnded | None = None
        self.scan_position = from_position
        """The next global position the reader will look at."""
        self.known_head = 0
        """The highest head position the reader has seen."""
        self.live = False
        """False while catching up; True once the reader follows appends."""

    @property
    def end_reason(self) -> SubscriptionEnded | None:
        """Why the subscription stopped (None while it runs)."""
        return self._end

    @property
    def buffered(self) -> int:
        """Events read but not yet taken by the consumer."""
        return len(self._items)

    def resume_position(self, last_sent_position: int) -> int:
        """Where a new subscription must start to miss nothing and repeat nothing.

        With an empty buffer every scanned position was delivered or filtered out, so the
        cursor is exact; otherwise the event after the last one sent.
        """
        if not self._items and self._end is None:
            return max(self.scan_position, last_sent_position + 1)
        return last_sent_position + 1

    async def get(self, timeout_s: float) -> StoredEvent | None:
        """The next event, or None when none came within ``timeout_s`` (time for a heartbeat).

        Raises the :class:`SubscriptionEnded` that stopped the reader.
        """
        if not self._items:
            if self._end is not None:
                raise self._end
            self._wakeup.clear()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._wakeup.wait()
            except TimeoutError:
                return None
            if not self._items:
                if self._end is not None:
                    raise self._end
                return None
        event = self._items.popleft()
        self._room.set()
        return event

    def close(self, reason: str) -> None:
        """End the subscription from outside (e.g. server shutdown): ``ended`` is set and
        ``end_reason`` says ``reason``; the reader task should then be cancelled."""
        if self._end is None:
            self._stop(SubscriptionEnded(reason))

    def _stop(self, end: SubscriptionEnded) -> None:
        self._end = end
        self.ended.set()
        self._wakeup.set()

    def _push(self, batch: Sequence[StoredEvent]) -> None:
        if batch:
            self._items.extend(batch)
            self._wakeup.set()

    async def run(self) -> None:
        """The reader loop; returns when the subscription ends (cancel it to stop earlier)."""
        try:
            await self._follow()
        except SubscriberTooSlow as exc:
            self._stop(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a store failure ends this subscriber, not the server
            failure = SubscriptionFailed(f"reading the log failed: {exc}")
            failure.__cause__ = exc
            self._stop(failure)

    async def _follow(self) -> None:
        feed = self._store.follow(
            self.scan_position,
            self._filter,
            page_events=self._page_events,
            wait_s=self._live_wait_s,
        )
        async with contextlib.aclosing(feed) as batches:
            async for batch in batches:
                self.known_head = max(self.known_head, batch.head)
                if self.live:
                    if len(self._items) + len(batch.events) > self._buffer_events:
                        raise SubscriberTooSlow(self._buffer_events)
                    self._push(batch.events)
                else:
                    await self._push_when_room(batch.events)
                    self.live = batch.live
                # Only now: until every event of the batch is buffered, resuming must not
                # skip past the ones still held here.
                self.scan_position = max(self.scan_position, batch.scanned_to)

    async def _push_when_room(self, events: Sequence[StoredEvent]) -> None:
        """Catch-up: buffer ``events`` without filling more than half the buffer."""
        catch_up_fill = max(1, self._buffer_events // 2)
        done = 0
        while done < len(events):
            room = catch_up_fill - len(self._items)
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            self._push(events[done : done + room])
            done += room
