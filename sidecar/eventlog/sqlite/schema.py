"""The SQLite event log's schema and the queries the writer and the readers share.

Kept apart from :mod:`sidecar.eventlog.sqlite.store` (threads, group commit) so the store's
module is about concurrency and this one about rows. Retention's cut lives in
:mod:`sidecar.eventlog.sqlite.retention`.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

from sidecar import chain
from sidecar.eventlog.port import RetentionAnchor, StoredEvent

SCHEMA_VERSION: Final = 2
"""2 added the ``anchors`` table (retention); a version-1 file gains it when opened."""
I64_MAX: Final = 2**63 - 1
I64_MIN: Final = -(2**63)
_IN_CHUNK: Final = 500  # event ids per "IN (...)" lookup, well under SQLite's variable limit

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS events (
    global_position INTEGER PRIMARY KEY,
    event_id        TEXT    NOT NULL UNIQUE,
    stream          TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    type            TEXT    NOT NULL,
    occurred_at_ns  INTEGER NOT NULL,
    trace_id        TEXT    NOT NULL,
    payload         BLOB    NOT NULL,
    prev_hash       BLOB    NOT NULL,
    hash            BLOB    NOT NULL,
    service         TEXT    NOT NULL,
    instance        TEXT    NOT NULL,
    upstream        TEXT    NOT NULL,
    recorded_at_ns  INTEGER NOT NULL,
    record_hash     BLOB    NOT NULL,
    UNIQUE (stream, version)
);
CREATE INDEX IF NOT EXISTS events_by_service  ON events (service, global_position);
CREATE INDEX IF NOT EXISTS events_by_upstream ON events (upstream, global_position);
CREATE INDEX IF NOT EXISTS events_by_type     ON events (type, global_position);
CREATE TABLE IF NOT EXISTS anchors (
    stream          TEXT    PRIMARY KEY,
    version         INTEGER NOT NULL,
    hash            BLOB    NOT NULL,
    global_position INTEGER NOT NULL,
    recorded_at_ns  INTEGER NOT NULL,
    cut_at_ns       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    name        TEXT    PRIMARY KEY,
    position    INTEGER NOT NULL,
    state       BLOB    NOT NULL,
    saved_at_ns INTEGER NOT NULL
);
"""

# Column order == StoredEvent field order, so a row unpacks straight into StoredEvent(*row).
COLUMNS: Final = (
    "event_id, stream, version, type, occurred_at_ns, trace_id, payload, prev_hash, hash, "
    "service, instance, upstream, global_position, recorded_at_ns, record_hash"
)
INSERT: Final = f"INSERT INTO events ({COLUMNS}) VALUES ({', '.join('?' * 15)})"

# Distinct stream names by index skip-scan: O(streams x log n) instead of a full index walk.
# A stream whose events retention deleted is still a stream: its anchor lists it.
STREAMS_SQL: Final = """
WITH RECURSIVE s(stream) AS (
    SELECT MIN(stream) FROM events
    UNION ALL
    SELECT (SELECT MIN(stream) FROM events WHERE stream > s.stream) FROM s
    WHERE s.stream IS NOT NULL
)
SELECT stream FROM s WHERE stream IS NOT NULL
UNION SELECT stream FROM anchors
ORDER BY 1
"""

# The highest position ever given: deleted events keep theirs (their anchors remember them).
HEAD_SQL: Final = """
SELECT MAX(COALESCE((SELECT MAX(global_position) FROM events), 0),
           COALESCE((SELECT MAX(global_position) FROM anchors), 0))
"""

_ANCHOR_COLUMNS: Final = "stream, version, hash, global_position, recorded_at_ns, cut_at_ns"


def load_by_event_id(conn: sqlite3.Connection, event_ids: list[str]) -> dict[str, StoredEvent]:
    found: dict[str, StoredEvent] = {}
    for start in range(0, len(event_ids), _IN_CHUNK):
        chunk = event_ids[start : start + _IN_CHUNK]
        sql = f"SELECT {COLUMNS} FROM events WHERE event_id IN ({', '.join('?' * len(chunk))})"
        for row in conn.execute(sql, chunk):
            event = StoredEvent(*row)
            found[event.event_id] = event
    return found


def stream_head(conn: sqlite3.Connection, stream: str) -> tuple[int, bytes]:
    row = conn.execute(
        "SELECT version, hash FROM events WHERE stream = ? ORDER BY version DESC LIMIT 1",
        (stream,),
    ).fetchone()
    if row is not None:
        return int(row[0]), bytes(row[1])
    anchor = load_anchor(conn, stream)  # every event deleted: the stream chains on its anchor
    if anchor is not None:
        return anchor.version, anchor.hash
    return 0, chain.GENESIS_HASH


def event_id_at(conn: sqlite3.Connection, stream: str, version: int) -> str:
    row = conn.execute(
        "SELECT event_id FROM events WHERE stream = ? AND version = ?", (stream, version)
    ).fetchone()
    return str(row[0]) if row is not None else "?"


def load_anchor(conn: sqlite3.Connection, stream: str) -> RetentionAnchor | None:
    """``stream``'s retention anchor, or None when retention never cut it."""
    row = conn.execute(
        f"SELECT {_ANCHOR_COLUMNS} FROM anchors WHERE stream = ?", (stream,)
    ).fetchone()
    return _anchor(row) if row is not None else None


def load_anchors(conn: sqlite3.Connection) -> dict[str, RetentionAnchor]:
    """Every stream's anchor."""
    rows = conn.execute(f"SELECT {_ANCHOR_COLUMNS} FROM anchors ORDER BY stream").fetchall()
    return {row[0]: _anchor(row) for row in rows}


def save_anchor(conn: sqlite3.Connection, anchor: RetentionAnchor) -> None:
    conn.execute(
        f"INSERT OR REPLACE INTO anchors ({_ANCHOR_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
        (anchor.stream, anchor.version, anchor.hash, anchor.global_position,
         anchor.recorded_at_ns, anchor.cut_at_ns),
    )


def _anchor(row: tuple[Any, ...]) -> RetentionAnchor:
    stream, version, hash_, position, recorded_at_ns, cut_at_ns = row
    return RetentionAnchor(str(stream), int(version), bytes(hash_), int(position),
                           int(recorded_at_ns), int(cut_at_ns))
