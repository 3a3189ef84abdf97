"""The outbox's records and its SQLite schema (kept apart from :mod:`sidecar.events.outbox`,
which is about numbering, the bound and the lock)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sidecar import chain

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS head (
    stream  TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    hash    BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order
    event_id       TEXT NOT NULL UNIQUE,
    stream         TEXT NOT NULL,
    version        INTEGER,                            -- NULL: awaiting the stream head
    occurred_at_ns INTEGER NOT NULL,
    body           BLOB NOT NULL                       -- serialized sidecar.v1.Event
);
CREATE UNIQUE INDEX IF NOT EXISTS events_stream_version
    ON events (stream, version) WHERE version IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_stream_seq ON events (stream, seq);
CREATE TABLE IF NOT EXISTS acked_head (  -- the last version and hash the log acknowledged
    stream  TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    hash    BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS acked (       -- acknowledged events kept for a rollback repair
    seq            INTEGER PRIMARY KEY,   -- the seq the event had in ``events``
    event_id       TEXT NOT NULL UNIQUE,
    stream         TEXT NOT NULL,
    version        INTEGER NOT NULL,
    occurred_at_ns INTEGER NOT NULL,
    body           BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS acked_stream_version ON acked (stream, version);
"""


class OutboxError(RuntimeError):
    """The outbox file cannot be used (wrong schema, unreadable)."""


class OutboxLockedError(OutboxError):
    """Another process holds the outbox (two sidecars configured with one ``outbox_path``)."""


@dataclass(frozen=True, slots=True)
class StreamHead:
    """The last numbered event of a stream: the next event gets ``version + 1`` and
    ``prev_hash = hash``."""

    version: int
    hash: bytes


GENESIS_HEAD: Final = StreamHead(0, chain.GENESIS_HASH)
"""The head of a stream with no event yet."""


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """A consistent read of the outbox for metrics (computed at scrape time)."""

    pending: int
    """Unshipped events held (numbered or awaiting their stream head)."""
    awaiting_head: int
    """Of ``pending``: events not numbered yet because their stream head is being learned."""
    oldest_pending_occurred_at_ns: int | None
    """``occurred_at`` of the oldest unshipped event (by arrival), None when empty."""
    refused: int
    """Events refused because the outbox was full, since it was opened."""


@dataclass(frozen=True, slots=True)
class RebaseOutcome:
    """What :meth:`Outbox.rebase` did to one stream."""

    already_stored: int
    """Unshipped events the log turned out to have: deleted from the outbox as shipped."""
    renumbered: int
    """Events (re)numbered after the log's head."""
    head: StreamHead
    """The stream head afterwards."""
