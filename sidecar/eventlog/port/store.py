"""The abstract ``EventStore`` every adapter implements.

Adapters: ``sidecar.eventlog.sqlite.SqliteEventStore`` (embedded default) and
``sidecar.eventlog.nats.NatsEventStore`` (JetStream); ``opening.open_store(url)`` picks one by
URL. One contract test suite (``tests/contract/store_contract.py``) runs against every adapter.
The records it takes and gives are in ``records``, its errors in ``errors``, its bounds in
``limits``.

Threading: every method is a coroutine for one event loop; adapters own their threads and
connections and never block the loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Final

from sidecar.eventlog.port.following import next_cursor, read_until_head
from sidecar.eventlog.port.limits import DEFAULT_READ_LIMIT
from sidecar.eventlog.port.records import (
    NO_FILTER,
    AppendOutcome,
    EventFilter,
    FollowBatch,
    NewEvent,
    StoredEvent,
)

if TYPE_CHECKING:
    from sidecar.eventlog.port.anchors import RetentionAnchor

__all__ = ["DEFAULT_FOLLOW_WAIT_S", "EventStore"]

DEFAULT_FOLLOW_WAIT_S: Final = 1.0
"""How long ``follow`` waits for an append before it yields an empty batch (a sign of life
carrying the head it knows)."""


class EventStore(ABC):
    """Append-only, idempotent, hash-chained event storage.

    Contract (checked by ``tests/contract/store_contract.py``):

    - ``append`` stores a batch atomically (all events or none) and answers only after the
      batch is durable. An ``event_id`` seen before (ever) with identical content returns the
      original position with ``duplicate=True`` and stores nothing; with different content it
      is a ``ConflictError``. A new event must have ``version == head + 1`` of its stream,
      ``prev_hash`` == the head's hash (``GENESIS_HASH`` for version 1) and
      ``hash == hash_of(event)``, else ``ChainError`` (or ``ConflictError`` when the version is
      already taken by another event).
    - Global positions are 1, 2, 3, ... without gaps, in commit order, until retention
      deletes a prefix of a stream (``cut``): then the deleted positions are missing from
      reads, are never given again, and the head position never goes down.
    - Reads return events in order; ``limit`` is 1..``MAX_READ_LIMIT``.
    - Retention (``anchors``): ``cut`` deletes a stream's oldest versions and
      leaves an anchor; an append at or below it raises ``BeforeAnchorError``; a stream whose
      events were all deleted is still listed by ``streams`` and chains on from its anchor.
    """

    @abstractmethod
    async def append(self, events: Sequence[NewEvent]) -> list[AppendOutcome]:
        """Store one atomic batch; one outcome per input event, in input order."""

    @abstractmethod
    async def read_stream(
        self, stream: str, from_version: int = 1, limit: int = DEFAULT_READ_LIMIT
    ) -> list[StoredEvent]:
        """Events of ``stream`` with ``version >= from_version``, by version."""

    @abstractmethod
    async def read_all(
        self,
        from_position: int = 1,
        limit: int = DEFAULT_READ_LIMIT,
        filter: EventFilter = NO_FILTER,
    ) -> list[StoredEvent]:
        """Events with ``global_position >= from_position`` passing ``filter``, by position.

        Page on with ``from_position = last.global_position + 1``.
        """

    @abstractmethod
    async def head_position(self) -> int:
        """The last committed global position (0 when empty)."""

    @abstractmethod
    async def streams(self) -> list[str]:
        """Names of all streams, sorted."""

    @abstractmethod
    async def anchors(self) -> dict[str, RetentionAnchor]:
        """Every stream's retention anchor, by stream (streams never cut have none)."""

    async def stream_head(self, stream: str) -> tuple[int, bytes]:
        """``stream``'s last version and hash (its anchor's when retention deleted every event;
        ``(0, b"")`` for a stream never written). Default: a search with ``read_stream``
        (``sidecar.eventlog.heads``); adapters that know their heads answer at once."""
        from sidecar.eventlog.heads import stream_head

        head = await stream_head(self, stream, await self.anchor(stream))
        return head.version, head.hash

    async def anchor(self, stream: str) -> RetentionAnchor | None:
        """``stream``'s retention anchor, or None (adapters answer it without reading all)."""
        return (await self.anchors()).get(stream)

    @abstractmethod
    async def cut(self, stream: str, through_version: int, cut_at_ns: int) -> RetentionAnchor:
        """Delete versions 1..``through_version`` of ``stream`` and anchor it there, at once.

        Returns the anchor in force afterwards. A ``through_version`` at or below the current
        anchor deletes nothing (the anchor never moves back); one above the stream's head, or
        below 1, is a ``ValueError``. Raises ``StoreError`` when this store cannot delete (e.g.
        a JetStream stream created to deny purges)."""

    @abstractmethod
    async def load_checkpoint(self, name: str) -> tuple[int, bytes] | None:
        """A projection's saved (position, state snapshot), or None."""

    @abstractmethod
    async def save_checkpoint(self, name: str, position: int, state: bytes) -> None:
        """Durably replace a projection's checkpoint; position and state change together."""

    @abstractmethod
    async def wait_for_append(self, after_position: int, timeout_s: float) -> int:
        """The head as soon as it is > ``after_position``, else the head after ``timeout_s``."""

    async def follow(
        self,
        from_position: int,
        filter: EventFilter = NO_FILTER,
        *,
        page_events: int = DEFAULT_READ_LIMIT,
        wait_s: float = DEFAULT_FOLLOW_WAIT_S,
    ) -> AsyncGenerator[FollowBatch, None]:
        """Every event from ``from_position`` on that passes ``filter``, catch-up then live,
        in position order, each exactly once, as batches of at most ``page_events``.

        Never ends by itself (close it: ``contextlib.aclosing``); a store failure raises.
        Reads ahead by at most one batch: a follower that stops pulling leaves the backlog in
        the store. Default: ``read_all`` pages up to the head, then ``wait_for_append`` and
        more pages (one cursor, so the switch to live can neither skip nor repeat an event).
        Adapters with a native feed override it (JetStream: an ordered consumer).
        """
        if from_position < 1:
            raise ValueError(f"from_position: must be >= 1, got {from_position}")
        cursor = from_position
        async for batch in read_until_head(self, from_position, filter, page_events):
            cursor = batch.scanned_to
            yield batch
        while True:
            head = await self.wait_for_append(cursor - 1, wait_s)
            if head < cursor:
                yield FollowBatch((), cursor, head, True)
                continue
            while cursor <= head:
                page = await self.read_all(cursor, page_events, filter)
                cursor = next_cursor(cursor, page, page_events, head)
                yield FollowBatch(tuple(page), cursor, max(head, cursor - 1), True)

    @abstractmethod
    async def close(self) -> None:
        """Release threads and connections; idempotent."""
