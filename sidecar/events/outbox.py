"""The durable local outbox: breaker events wait here (SQLite, WAL) until the event log has them.

Two pieces:

- :class:`Outbox`, the SQLite file at ``eventlog.outbox_path``. It is the ONE place where events
  get their ``version``, ``prev_hash`` and ``hash``: :meth:`Outbox.append` numbers events in the
  order they arrive, continuing from the stream head it keeps in the same file (table ``head``,
  updated in the same transaction), so versions and the hash chain continue across restarts,
  and two breakers changing at the same instant can never take the same version.
- :class:`OutboxWriter` (in :mod:`sidecar.events.writer`, re-exported here), the thread that
  moves events from the in-memory :class:`~sidecar.events.producer.EventQueue` into the outbox,
  off the data path.

Stream head unknown. A stream the outbox has no head for (a first start, a wiped outbox file,
a new instance name) must not guess ``version = 1``: the event log may already hold that stream.
Its events are stored un-numbered ("awaiting head") until the shipper has read the stream's head
from the log and called :meth:`Outbox.rebase`; they are numbered then, in arrival order, and
shipped. So a sidecar whose outbox was wiped continues the log's chain instead of colliding
with it. (What the wiped outbox held but never shipped is lost: that is the one thing a
deleted file takes with it.)

Size bound policy (``max_events``): when the outbox holds ``max_events`` unshipped events, NEW
events are refused. They are counted (:attr:`OutboxStats.refused`, exported as
``sidecar_events_dropped_total{reason="outbox_full"}``) and logged loudly by the writer; nothing
already in the outbox is dropped. Refusing the newest is the only chain-safe choice: an event
that was refused never got a version, so the chain of what is stored stays unbroken, whereas
dropping an older, numbered event would leave a hole no later event could be appended after.
Acknowledged events leave the pending set at once, so the bound counts unshipped events only.

Rollback memory. The outbox remembers, per stream, the last version and hash the log
acknowledged (table ``acked_head``) and keeps the newest ``keep_acked`` acknowledged events
(table ``acked``, oldest pruned beyond it). An event log restored from an older backup cannot see
its own truncation; the shipper compares the log's head against this memory on (re)connect
(:mod:`sidecar.events.rollback`) and :meth:`Outbox.requeue_acked` puts the kept events back into
the pending set, with their original arrival order, so they are shipped again.

Conflicts. If the log refuses a batch as a conflict (another event at our version, or a chain
that does not continue its head), :meth:`Outbox.rebase` drops the events the log already has
(matched by ``event_id``) and renumbers every still-unshipped event after the log's head. This
is safe because the log never accepted those numbers: nobody has seen them.

Durability: ``synchronous=FULL`` (each write transaction is fsynced; the writer batches, so it
is one fsync per batch, never on the data path). An exclusive ``flock`` on ``<path>.lock``
stops a second process from using the same outbox (two writers would fork the chain); the OS
releases it when the process dies, even by SIGKILL.

Threading: :class:`Outbox` is thread-safe (one lock around one connection); its methods block
on disk I/O and must never be called on the proxy's event loop: the writer thread, the shipper
thread and the metrics scrape thread use it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import IO, Final

from sidecar import chain
from sidecar.events.outbox_records import (
    GENESIS_HEAD,
    SCHEMA,
    OutboxError,
    OutboxLockedError,
    OutboxStats,
    RebaseOutcome,
    StreamHead,
)
from sidecar.events.writer import DEFAULT_WRITER_POLL_S, DEFAULT_WRITER_RETRY_S, OutboxWriter
from sidecar.v1 import events_pb2

__all__ = [
    "DEFAULT_KEEP_ACKED",
    "DEFAULT_WRITER_POLL_S",
    "DEFAULT_WRITER_RETRY_S",
    "GENESIS_HEAD",
    "Outbox",
    "OutboxError",
    "OutboxLockedError",
    "OutboxStats",
    "OutboxWriter",
    "RebaseOutcome",
    "StreamHead",
]

_log = logging.getLogger("sidecar.events")

SCHEMA_VERSION: Final = 1
DEFAULT_BUSY_TIMEOUT_MS: Final = 5_000
"""SQLite busy timeout (only a reader such as a backup tool can hold the file briefly)."""
_SQL_PARAMS_PER_STATEMENT: Final = 500
DEFAULT_KEEP_ACKED: Final = 10_000
"""Acknowledged events the outbox keeps to re-ship after a rollback of the event log."""



def _lock_file(path: Path) -> IO[bytes]:
    lock = open(str(path) + ".lock", "ab")  # held open for the outbox's life
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise OutboxLockedError(
            f"outbox {path} is in use by another process (pid in {path}.lock); "
            "each sidecar needs its own eventlog.outbox_path"
        ) from None
    lock.truncate(0)
    lock.write(str(os.getpid()).encode())
    lock.flush()
    return lock


def _seal(event: events_pb2.Event, head: StreamHead) -> StreamHead:
    """Give ``event`` the next version after ``head``, its ``prev_hash`` and its ``hash``;
    return the new head. The only code that numbers and chains events (called by
    :class:`Outbox` under its lock, in arrival order)."""
    event.version = head.version + 1
    event.prev_hash = head.hash
    event.ClearField("hash")
    event.ClearField("global_position")
    event.ClearField("recorded_at")
    event.hash = chain.proto_hash(event)
    return StreamHead(event.version, bytes(event.hash))


class Outbox:
    """The SQLite outbox; see the module docstring for numbering, bound and conflicts.

    Example::

        outbox = Outbox("/var/lib/sidecar/outbox.db", max_events=100_000)
        outbox.append([event])                       # numbered if the stream head is known
        batch = outbox.next_batch(500)               # numbered, unshipped, in order
        outbox.acknowledge([e.event_id for e in batch])
        outbox.close()
    """

    def __init__(self, path: str | Path, *, max_events: int,
                 keep_acked: int = DEFAULT_KEEP_ACKED) -> None:
        if max_events < 1:
            raise ValueError(f"max_events: must be >= 1, got {max_events}")
        if keep_acked < 0:
            raise ValueError(f"keep_acked: must be >= 0, got {keep_acked}")
        self.path = Path(path)
        self.max_events = max_events
        self.keep_acked = keep_acked
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lockfile = _lock_file(self.path)
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None,
                                       check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout = {DEFAULT_BUSY_TIMEOUT_MS}")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(f"outbox {self.path}: cannot switch to WAL (got {mode!r})")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.executescript(SCHEMA)
            self._check_schema()
            self._heads: dict[str, StreamHead] = {
                stream: StreamHead(int(version), bytes(hash_))
                for stream, version, hash_ in self._db.execute(
                    "SELECT stream, version, hash FROM head")
            }
            self._pending = int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        except sqlite3.Error as exc:
            self._lockfile.close()
            raise OutboxError(f"outbox {self.path}: {exc}") from exc
        except BaseException:
            self._lockfile.close()
            raise
        self._refused = 0
        self._lock = threading.Lock()
        self._closed = False

    def _check_schema(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                             (str(SCHEMA_VERSION),))
        elif row[0] != str(SCHEMA_VERSION):
            raise OutboxError(
                f"outbox {self.path}: schema version {row[0]} is not {SCHEMA_VERSION}; "
                "ship it with the sidecar version that wrote it, or move the file away"
            )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- the one place where versions and hashes are assigned ---------------------------------

    def _number(self, stream: str, head: StreamHead) -> tuple[StreamHead, int]:
        """Number the stream's un-numbered events in arrival order after ``head``.

        Inside a transaction, under ``self._lock``. Returns the new head and how many events
        were numbered.
        """
        rows = self._db.execute(
            "SELECT seq, body FROM events WHERE stream = ? AND version IS NULL ORDER BY seq",
            (stream,),
        ).fetchall()
        for seq, body in rows:
            event = events_pb2.Event.FromString(body)
            head = _seal(event, head)
            self._db.execute("UPDATE events SET version = ?, body = ? WHERE seq = ?",
                             (event.version, event.SerializeToString(), seq))
        if rows:
            self._save_head(stream, head)
        return head, len(rows)

    def _save_head(self, stream: str, head: StreamHead) -> None:
        self._db.execute(
            "INSERT INTO head (stream, version, hash) VALUES (?, ?, ?) "
            "ON CONFLICT (stream) DO UPDATE SET version = excluded.version, hash = excluded.hash",
            (stream, head.version, head.hash),
        )

    def append(self, events: Sequence[events_pb2.Event]) -> int:
        """Store new (un-numbered) events in arrival order; return how many were accepted.

        Events of a stream whose head is known are numbered in the same transaction (the
        given messages are updated in place). When the
        outbox is full, the events beyond the bound are refused (counted in ``refused``; the
        caller logs). An ``event_id`` already in the outbox is ignored. Raises
        ``sqlite3.Error`` when the disk write fails (nothing is stored then).
        """
        with self._lock:
            room = max(0, self.max_events - self._pending)
            accepted = events[:room]
            refused = len(events) - len(accepted)
            inserted = 0
            new_heads: dict[str, StreamHead] = {}
            if accepted:
                with self._transaction() as db:
                    for event in accepted:
                        # a stream whose head is known has no un-numbered rows (rebase numbers
                        # them all), so its new events are numbered right here, in order
                        head = new_heads.get(event.stream) or self._heads.get(event.stream)
                        sealed = _seal(event, head) if head is not None else None
                        cursor = db.execute(
                            "INSERT OR IGNORE INTO events "
                            "(event_id, stream, version, occurred_at_ns, body) "
                            "VALUES (?, ?, ?, ?, ?)",
                            (event.event_id, event.stream,
                             sealed.version if sealed is not None else None,
                             chain.timestamp_ns(event), event.SerializeToString()),
                        )
                        if cursor.rowcount:
                            inserted += 1
                            if sealed is not None:
                                new_heads[event.stream] = sealed
                    for stream, head in new_heads.items():
                        self._save_head(stream, head)
            # committed: the in-memory heads may follow (still under the lock)
            self._heads.update(new_heads)
            self._pending += inserted
            self._refused += refused
            return len(accepted)

    def rebase(self, stream: str, log_head: StreamHead,
               already_stored: Collection[str] = ()) -> RebaseOutcome:
        """Adopt the event log's head of ``stream`` and (re)number its unshipped events after it.

        Used when the head was unknown (fresh or wiped outbox) and after a conflict.
        ``already_stored`` are event ids the log has: they are deleted as shipped. Every other
        unshipped event of the stream is numbered after ``log_head`` in arrival order.
        """
        ids = list(already_stored)
        with self._lock:
            deleted = 0
            with self._transaction() as db:
                for start in range(0, len(ids), _SQL_PARAMS_PER_STATEMENT):
                    chunk = ids[start:start + _SQL_PARAMS_PER_STATEMENT]
                    marks = ",".join("?" * len(chunk))
                    deleted += db.execute(
                        f"DELETE FROM events WHERE stream = ? AND event_id IN ({marks})",
                        (stream, *chunk),
                    ).rowcount
                db.execute("UPDATE events SET version = NULL WHERE stream = ?", (stream,))
                head, renumbered = self._number(stream, log_head)
                if not renumbered:  # nothing left to number: still remember the log's head
                    self._save_head(stream, head)
            # committed; still under the lock, so no append can number from the old head
            self._heads[stream] = head
            self._pending -= deleted
        return RebaseOutcome(already_stored=deleted, renumbered=renumbered, head=head)

    # --- reads and acknowledgements ---------------------------------------------------------------

    def head(self, stream: str) -> StreamHead | None:
        """The stream's head as the outbox knows it; None when it must be learned from the log."""
        with self._lock:
            return self._heads.get(stream)

    def streams_awaiting_head(self) -> list[str]:
        """Streams with un-numbered events whose head is unknown (the shipper resolves them)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT stream FROM events WHERE version IS NULL").fetchall()
            return sorted(str(row[0]) for row in rows if row[0] not in self._heads)

    def next_batch(self, limit: int) -> list[events_pb2.Event]:
        """Up to ``limit`` numbered, unshipped events, oldest first (per stream: by version)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM events WHERE version IS NOT NULL ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [events_pb2.Event.FromString(row[0]) for row in rows]

    def first_unshipped_version(self, stream: str) -> int | None:
        """The lowest version of the stream still waiting to be shipped (None if none)."""
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(version) FROM events WHERE stream = ? AND version IS NOT NULL",
                (stream,),
            ).fetchone()
        return None if row[0] is None else int(row[0])

    def acknowledge(self, event_ids: Collection[str],
                    stored_elsewhere: Collection[str] = ()) -> int:
        """The log has these events: move them from the pending set to the acknowledged ones
        (the newest ``keep_acked`` are kept) and advance each stream's acknowledged head.
        ``stored_elsewhere`` are ids of ``event_ids`` the log holds at another version than
        ours (stored earlier): they leave the pending set but neither advance the head nor
        are kept, since our version and hash of them are not the log's.
        Returns how many left the pending set."""
        ids = list(event_ids)
        elsewhere = set(stored_elsewhere)
        deleted = 0
        with self._lock:
            with self._transaction() as db:
                for start in range(0, len(ids), _SQL_PARAMS_PER_STATEMENT):
                    chunk = ids[start:start + _SQL_PARAMS_PER_STATEMENT]
                    marks = ",".join("?" * len(chunk))
                    rows = db.execute(
                        "SELECT seq, event_id, stream, version, occurred_at_ns, body FROM events "
                        f"WHERE version IS NOT NULL AND event_id IN ({marks})", chunk).fetchall()
                    for seq, event_id, stream, version, occurred_at_ns, body in rows:
                        if event_id in elsewhere:
                            continue
                        event = events_pb2.Event.FromString(body)
                        db.execute(
                            "INSERT INTO acked_head (stream, version, hash) VALUES (?, ?, ?) "
                            "ON CONFLICT (stream) DO UPDATE SET version = excluded.version, "
                            "hash = excluded.hash WHERE excluded.version > acked_head.version",
                            (stream, version, bytes(event.hash)))
                        if self.keep_acked:
                            db.execute(
                                "INSERT OR REPLACE INTO acked (seq, event_id, stream, version, "
                                "occurred_at_ns, body) VALUES (?, ?, ?, ?, ?, ?)",
                                (seq, event_id, stream, version, occurred_at_ns, body))
                    deleted += db.execute(
                        f"DELETE FROM events WHERE event_id IN ({marks})", chunk).rowcount
                if self.keep_acked:  # the newest keep_acked stay (seq: arrival order)
                    db.execute("DELETE FROM acked WHERE seq < (SELECT seq FROM acked "
                               "ORDER BY seq DESC LIMIT 1 OFFSET ?)", (self.keep_acked - 1,))
                else:
                    db.execute("DELETE FROM acked")
            self._pending -= deleted
        return deleted

    def acknowledged_head(self, stream: str) -> StreamHead | None:
        """The last version and hash the log acknowledged for ``stream`` (None: nothing yet)."""
        with self._lock:
            row = self._db.execute("SELECT version, hash FROM acked_head WHERE stream = ?",
                                   (stream,)).fetchone()
        return None if row is None else StreamHead(int(row[0]), bytes(row[1]))

    def acknowledged_streams(self) -> list[str]:
        """Streams the log has acknowledged events of (the ones a rollback check looks at)."""
        with self._lock:
            rows = self._db.execute("SELECT stream FROM acked_head ORDER BY stream").fetchall()
        return [str(row[0]) for row in rows]

    def acknowledged_events(self, stream: str, after_version: int = 0) -> list[events_pb2.Event]:
        """The kept acknowledged events of ``stream`` after ``after_version``, by version."""
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM acked WHERE stream = ? AND version > ? ORDER BY version",
                (stream, after_version)).fetchall()
        return [events_pb2.Event.FromString(row[0]) for row in rows]

    def requeue_acked(self, stream: str, after_version: int, log_head: StreamHead) -> int:
        """After a rollback of the log: put the kept acknowledged events of ``stream`` after
        ``after_version`` back into the pending set (their arrival order kept), set the
        acknowledged head to the log's ``log_head`` and renumber every pending event of the
        stream after it (:meth:`rebase`). Events whose version and chain the log lost are thus
        re-shipped with the same ids; when the log still ends where they began, with the same
        versions and hashes. Returns how many were requeued."""
        with self._lock:
            with self._transaction() as db:
                moved = db.execute(
                    "INSERT OR IGNORE INTO events (seq, event_id, stream, version, "
                    "occurred_at_ns, body) SELECT seq, event_id, stream, NULL, occurred_at_ns, "
                    "body FROM acked WHERE stream = ? AND version > ?",
                    (stream, after_version)).rowcount
                db.execute("DELETE FROM acked WHERE stream = ? AND version > ?",
                           (stream, after_version))
                db.execute(
                    "INSERT INTO acked_head (stream, version, hash) VALUES (?, ?, ?) "
                    "ON CONFLICT (stream) DO UPDATE SET version = excluded.version, "
                    "hash = excluded.hash", (stream, log_head.version, log_head.hash))
            self._pending += moved
        self.rebase(stream, log_head)
        return moved

    def stats(self) -> OutboxStats:
        """Pending count, awaiting-head count, oldest unshipped event, refusals."""
        with self._lock:
            if self._closed:
                return OutboxStats(0, 0, None, self._refused)
            oldest = self._db.execute(
                "SELECT occurred_at_ns FROM events ORDER BY seq LIMIT 1").fetchone()
            awaiting = self._db.execute(
                "SELECT COUNT(*) FROM events WHERE version IS NULL").fetchone()[0]
            return OutboxStats(
                pending=self._pending,
                awaiting_head=int(awaiting),
                oldest_pending_occurred_at_ns=None if oldest is None else int(oldest[0]),
                refused=self._refused,
            )

    def close(self) -> None:
        """Close the file and release the lock. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._db.close()
            self._lockfile.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
