"""Following the log: the catch-up every ``follow`` starts with, and where a scan goes on.

``EventStore.follow`` (the port's default) and the JetStream adapter's own ``follow`` share
these, so a follower resumes at the same cursor whichever store it reads.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from sidecar.eventlog.port.records import EventFilter, FollowBatch, StoredEvent

if TYPE_CHECKING:
    from sidecar.eventlog.port.store import EventStore

__all__ = ["next_cursor", "read_until_head"]


def next_cursor(cursor: int, page: list[StoredEvent], limit: int, head: int) -> int:
    """Where a scan goes on after reading ``page`` (``limit`` asked) from ``cursor``, with
    ``head`` read before the page: a short page scanned everything up to ``head``."""
    after = page[-1].global_position + 1 if page else cursor
    return max(after, head + 1, cursor) if len(page) < limit else after


async def read_until_head(
    store: EventStore, from_position: int, filter: EventFilter, page_events: int
) -> AsyncGenerator[FollowBatch, None]:
    """The catch-up part of ``EventStore.follow``: ``read_all`` pages from ``from_position``
    until a page comes back short of the head read before it; that last batch has
    ``live=True`` (also when there was nothing to read)."""
    cursor = from_position
    while True:
        head = await store.head_position()
        if cursor > head:
            yield FollowBatch((), cursor, head, True)
            return
        page = await store.read_all(cursor, page_events, filter)
        cursor = next_cursor(cursor, page, page_events, head)
        live = cursor > head
        yield FollowBatch(tuple(page), cursor, max(head, cursor - 1), live)
        if live:
            return
