"""Following the log: ``follow`` on an ordered consumer, and ``wait_for_append``.

``follow`` catches up with ``read_all`` pages and then follows live from a JetStream ordered
consumer; ``wait_for_append`` wakes on the head notices (``connection``) and the head poller.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from sidecar.eventlog.nats.codec import decode_event
from sidecar.eventlog.nats.lookups import JetStreamLookups
from sidecar.eventlog.nats.settings import DEFAULT_FOLLOW_HEARTBEAT_S
from sidecar.eventlog.nats.subjects import stream_sequence
from sidecar.eventlog.port import (
    DEFAULT_FOLLOW_WAIT_S,
    DEFAULT_READ_LIMIT,
    NO_FILTER,
    EventFilter,
    FollowBatch,
    StoredEvent,
    StoreError,
    read_until_head,
)


class Following(JetStreamLookups):
    """Live following and waiting (see the package docstring, **Waiting**, **Following**)."""

    async def follow(
        self,
        from_position: int,
        filter: EventFilter = NO_FILTER,
        *,
        page_events: int = DEFAULT_READ_LIMIT,
        wait_s: float = DEFAULT_FOLLOW_WAIT_S,
    ) -> AsyncGenerator[FollowBatch, None]:
        """Catch-up with ``read_all`` pages (batched direct gets, recent commits from memory),
        then live from a JetStream ordered consumer starting at the catch-up's cursor.

        The consumer (ephemeral, in memory, no acks, flow-controlled) starts exactly at the
        next position not yet scanned, so the switch cannot skip or repeat an event, and it
        delivers in stream order; nats-py recreates it where it left off when it sees a gap
        or misses its heartbeats. Messages are taken off the subscription only when pulled,
        and JetStream's flow control stops sending while they wait: a follower that stops
        pulling leaves the backlog in the stream. A service/instance filter is a subject
        filter on the consumer (so ``scanned_to`` only passes events it was sent); the rest
        of the filter is applied here.
        """
        if from_position < 1:
            raise ValueError(f"from_position: must be >= 1, got {from_position}")
        cursor = from_position
        async for batch in read_until_head(self, from_position, filter, page_events):
            cursor = batch.scanned_to
            yield batch
        js = await self._ensure()
        keep = None if filter == NO_FILTER else filter.matches
        subscription = await self._ordered_consumer(
            js, self._subjects.filter_for(filter) or self._subjects.events, cursor
        )
        try:
            while True:
                try:
                    msg = await subscription.next_msg(timeout=wait_s)
                except nats.errors.TimeoutError:
                    yield FollowBatch((), cursor, max(self._head_seen, cursor - 1), True)
                    continue
                except nats.errors.Error as exc:
                    raise StoreError(f"following from position {cursor}: {exc!r}") from exc
                events: list[StoredEvent] = []
                while True:
                    sequence = stream_sequence(msg.reply)
                    if sequence >= cursor:  # below: re-sent after a consumer reset; had it
                        if keep is None and sequence != cursor and not (
                            await self._gap_explained(cursor, sequence - 1)
                        ):
                            raise StoreError(
                                f"following: position {sequence} arrived where {cursor} was "
                                "due (a message was lost on the way)"
                            )
                        event = decode_event(msg.data, sequence)
                        cursor = sequence + 1
                        if (keep is None or keep(event)) and not self._book.hides(event):
                            events.append(event)
                    if len(events) >= page_events or not subscription.pending_msgs:
                        break
                    msg = await subscription.next_msg(timeout=None)
                yield FollowBatch(tuple(events), cursor, max(self._head_seen, cursor - 1), True)
        finally:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await subscription.unsubscribe()

    async def _ordered_consumer(
        self, js: JetStreamContext, subject: str, start: int
    ) -> JetStreamContext.PushSubscription:
        try:
            return await js.subscribe(
                subject,
                stream=self._settings.stream,
                ordered_consumer=True,
                idle_heartbeat=DEFAULT_FOLLOW_HEARTBEAT_S,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
                ),
            )
        except (TimeoutError, nats.errors.Error) as exc:
            raise StoreError(
                f"creating an ordered consumer on {subject} from position {start}: {exc!r}"
            ) from exc

    async def wait_for_append(self, after_position: int, timeout_s: float) -> int:
        await self._ensure()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout_s, 0.0)
        if self._head_seen <= after_position:
            with contextlib.suppress(StoreError):
                await self.head_position()
        while self._head_seen <= after_position and not self._closed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            changed = self._head_changed
            self._waiters += 1
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                break
            finally:
                self._waiters -= 1
        return self._head_seen
