"""Retention's cut on the SQLite event log: delete a stream's oldest versions, keep an anchor.

Runs on the store's writer thread inside the group transaction (its own SAVEPOINT), so the
rows go and the anchor comes in one commit: a crash leaves either both or neither. Deleted
rows free their event ids; the anchor (``sidecar.eventlog.port.anchors``) is what refuses their
retries from then on.
"""

from __future__ import annotations

import sqlite3

from sidecar.eventlog.port import RetentionAnchor
from sidecar.eventlog.sqlite.schema import load_anchor, save_anchor, stream_head


def cut_stream(
    conn: sqlite3.Connection, stream: str, through_version: int, cut_at_ns: int
) -> RetentionAnchor:
    """Delete versions 1..``through_version`` of ``stream`` and anchor it at the last of them.

    Idempotent: at or below the current anchor nothing changes and that anchor is returned.
    Raises ``ValueError`` for a version past the stream's head (nothing to anchor on)."""
    current = load_anchor(conn, stream)
    if current is not None and through_version <= current.version:
        return current
    head_version, _ = stream_head(conn, stream)
    if through_version > head_version:
        raise ValueError(
            f"through_version: stream {stream!r} has no version {through_version} "
            f"(its head is version {head_version})"
        )
    row = conn.execute(
        "SELECT hash, global_position, recorded_at_ns FROM events "
        "WHERE stream = ? AND version = ?",
        (stream, through_version),
    ).fetchone()
    if row is None:  # a version past the anchor but absent: the file was changed by hand
        raise ValueError(f"through_version: stream {stream!r} version {through_version} is "
                         "missing from the log (run sidecar eventlog verify)")
    anchor = RetentionAnchor(
        stream=stream,
        version=through_version,
        hash=bytes(row[0]),
        global_position=int(row[1]),
        recorded_at_ns=int(row[2]),
        cut_at_ns=cut_at_ns,
    )
    conn.execute("DELETE FROM events WHERE stream = ? AND version <= ?", (stream, through_version))
    save_anchor(conn, anchor)
    return anchor
