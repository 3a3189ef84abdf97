"""Stream heads: which stream the shipper must (re)learn the log's head of next, and learning
it.

A stream whose head the outbox does not know (first start, wiped outbox, new instance name), a
stream the log refused as a conflict, and every stream after a reconnect (the log may have come
back as an older copy, :class:`~sidecar.events.rollback.RollbackGuard`) is looked up in the log
before anything more of it is shipped: the head is read (``ReadStream``, a galloping search,
O(log n) calls), what the log already stores is dropped and the rest is numbered after it
(:meth:`~sidecar.events.outbox.Outbox.rebase`). One RPC's worth of work per call, on the
shipper's thread, like the rest of :mod:`sidecar.events.shipper`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Final

from sidecar.events.exporter import EventExporter
from sidecar.events.log_head import event_at, read_log_head
from sidecar.events.outbox import Outbox, StreamHead
from sidecar.events.rollback import RollbackGuard
from sidecar.v1 import events_pb2

__all__ = ["READ_PAGE_EVENTS", "StreamHeads"]

_log = logging.getLogger("sidecar.events")

READ_PAGE_EVENTS: Final = 1_000
"""Events per ReadStream page when the shipper reads what the log already has of a stream."""


class StreamHeads:
    """The streams waiting for their head, and the lookups that resolve them.

    ``timeout_s`` gives each RPC's deadline (the shipper's, shorter while it drains);
    ``on_rebase`` hears each stream (re)numbered (the shipper counts them).
    """

    def __init__(self, outbox: Outbox, exporter: EventExporter, rollback: RollbackGuard,
                 timeout_s: Callable[[], float], on_rebase: Callable[[], None]) -> None:
        self._outbox = outbox
        self._exporter = exporter
        self._rollback = rollback
        self._timeout_s = timeout_s
        self._on_rebase = on_rebase
        self._rebase_needed: set[str] = set()

    def mark(self, streams: Iterable[str]) -> None:
        """The log refused these streams as a conflict: re-read their heads next."""
        self._rebase_needed.update(streams)

    def next_stream(self) -> str | None:
        """The stream to check or resolve before anything is shipped, or None."""
        checking = self._rollback.next_stream()
        if checking is not None:
            return checking
        if self._rebase_needed:
            return min(self._rebase_needed)
        awaiting = self._outbox.streams_awaiting_head()
        return awaiting[0] if awaiting else None

    def check_then_resolve(self, stream: str) -> None:
        """A rollback check first (on (re)connect, and before adopting the log's head after a
        conflict: a log restored from a backup first shows as a conflict); then the head lookup
        if the stream needs one. A detected rollback already renumbered the stream."""
        marked = self._rollback.next_stream() == stream
        if self._rollback.check(stream, self._read_head, self._event_at) is not None:
            self._rebase_needed.discard(stream)
            return
        if marked and stream not in self._rebase_needed and (
                stream not in self._outbox.streams_awaiting_head()):
            return
        self._resolve(stream)

    def _resolve(self, stream: str) -> None:
        """Learn the log's head of ``stream`` and (re)number the outbox's unshipped events."""
        head = self._read_head(stream)
        first = self._outbox.first_unshipped_version(stream)
        stored: set[str] = set()
        if first is not None and head.version >= first:
            version = first
            while version <= head.version:
                page = self._exporter.read_stream(stream, version, READ_PAGE_EVENTS,
                                                  self._timeout_s())
                if not page:
                    break
                stored.update(event.event_id for event in page)
                version = int(page[-1].version) + 1
        outcome = self._outbox.rebase(stream, head, stored)
        self._rebase_needed.discard(stream)
        self._on_rebase()
        _log.info("stream %s continues after version %d of the event log "
                  "(%d unshipped events numbered, %d already stored)", stream, head.version,
                  outcome.renumbered, outcome.already_stored,
                  extra={"event": "stream_head", "stream": stream, "head_version": head.version,
                         "renumbered": outcome.renumbered,
                         "already_stored": outcome.already_stored})

    def _event_at(self, stream: str, version: int) -> events_pb2.Event | None:
        return event_at(self._exporter, stream, version, self._timeout_s())

    def _read_head(self, stream: str) -> StreamHead:
        known = self._outbox.head(stream)
        return read_log_head(self._exporter, stream, known, self._timeout_s())
