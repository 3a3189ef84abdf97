"""SQLite adapter of the event store port: WAL, ``synchronous=FULL``, group commit.

Why this shape:

- **One writer thread** (:mod:`sidecar.eventlog.sqlite.writer`) owns the only write
  connection. Appends from any number of coroutines are queued; the writer takes everything
  queued (up to ``max_group_events``) and stores it in one transaction, so one fsync covers many
  callers (group commit). Each caller's future is completed only after that COMMIT returned, so
  an acknowledged append is durable. A batch that fails its checks is rolled back to its own
  SAVEPOINT; the other batches of the group commit.
- **Gap-free positions**: the writer assigns ``global_position`` itself (MAX + 1 inside the
  write transaction), never via AUTOINCREMENT, and a rolled-back batch gives its positions back.
- **Reads** run on a small thread pool with their own connections (WAL lets readers run during
  a write), never on the event loop.
- ``wait_for_append`` waiters are woken by the writer right after each commit that moved the
  head. Only appends made through this object wake them: one process should own a database
  file for writing (other processes may read it, e.g. ``sidecar eventlog verify``).

Threading: the public methods are coroutines for any event loop; nothing blocks the loop except
the constructor (opens the file and creates the schema: call it at startup).

Example::

    store = SqliteEventStore("/var/lib/sidecar/eventlog.db")
    outcomes = await store.append([event])
    await store.close()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sidecar.eventlog.port import (
    DEFAULT_READ_LIMIT,
    NO_FILTER,
    AppendOutcome,
    EventFilter,
    EventStore,
    NewEvent,
    RetentionAnchor,
    StoredEvent,
    StoreError,
    check_read_limit,
)
from sidecar.eventlog.sqlite.schema import (
    COLUMNS,
    HEAD_SQL,
    I64_MAX,
    I64_MIN,
    SCHEMA,
    SCHEMA_VERSION,
    STREAMS_SQL,
    load_anchor,
    load_anchors,
)
from sidecar.eventlog.sqlite.schema import (
    stream_head as head_row,
)
from sidecar.eventlog.sqlite.settings import SqliteSettings
from sidecar.eventlog.sqlite.writer import AppendJob, CheckpointJob, CutJob, Job, SqliteWriter

__all__ = ["SqliteEventStore"]

_R = TypeVar("_R")


class SqliteEventStore(EventStore):
    """The embedded event store (see the module docstring for the threading model)."""

    def __init__(
        self,
        path: str | Path,
        settings: SqliteSettings | None = None,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        create: bool = True,
    ) -> None:
        """Open (with ``create``: make the folders and the file if missing) and set up the schema.

        Raises ``StoreError`` naming the path when the file cannot be opened or used (missing
        with ``create=False``, a folder in the way, no permission, not a SQLite database).
        """
        self._path = Path(path)
        self._settings = settings or SqliteSettings()
        if str(path) in ("", ":memory:"):
            raise ValueError("path: the SQLite store needs a file (readers use own connections)")
        self._writer_conn = self._open_writer(create)

        self._closed = False
        self._waiters_lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._writer = SqliteWriter(
            self._writer_conn,
            self._settings,
            clock_ns,
            self._wake_waiters,
            name=f"sqlite-writer:{self._path.name}",
        )

        self._local = threading.local()
        self._read_conns: list[sqlite3.Connection] = []
        self._read_conns_lock = threading.Lock()
        self._readers = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._settings.read_threads, thread_name_prefix="sqlite-read"
        )

    @property
    def path(self) -> Path:
        return self._path

    @property
    def settings(self) -> SqliteSettings:
        return self._settings

    def _open_writer(self, create: bool) -> sqlite3.Connection:
        """The write connection, in WAL mode with the schema in place."""
        if not create and not self._path.is_file():
            what = "is not a file" if self._path.exists() else "does not exist"
            raise StoreError(f"{self._path}: {what} (no event log there to open)")
        blocked = next((p for p in self._path.parents if p.exists() and not p.is_dir()), None)
        if blocked is not None:
            raise StoreError(f"{self._path}: {blocked} is not a folder")
        conn: sqlite3.Connection | None = None
        try:
            if create:
                self._path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect()
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self._path}: cannot switch to WAL journal mode (got {mode!r})")
            conn.execute(f"PRAGMA synchronous={self._settings.synchronous.upper()}")
            conn.executescript(SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except (OSError, sqlite3.Error) as exc:
            if conn is not None:
                conn.close()
            problem = str(exc)
            if isinstance(exc, OSError) and exc.strerror:
                problem = exc.strerror
                if exc.filename and str(exc.filename) != str(self._path):
                    problem += f" ({exc.filename})"
            raise StoreError(f"{self._path}: cannot open the SQLite event log: {problem}") from exc
        except StoreError:
            if conn is not None:
                conn.close()
            raise
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path,
            timeout=self._settings.busy_timeout_s,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,
        )
        return conn

    # --- the port ----------------------------------------------------------------------------

    async def append(self, events: Sequence[NewEvent]) -> list[AppendOutcome]:
        if not events:
            return []
        outcomes: list[AppendOutcome] = await self._submit(AppendJob(events=tuple(events)))
        return outcomes

    async def save_checkpoint(self, name: str, position: int, state: bytes) -> None:
        if not name:
            raise ValueError("name: a checkpoint needs a name")
        if position < 0:
            raise ValueError(f"position: must be >= 0, got {position}")
        await self._submit(CheckpointJob(name=name, position=position, state=bytes(state)))

    async def read_stream(
        self, stream: str, from_version: int = 1, limit: int = DEFAULT_READ_LIMIT
    ) -> list[StoredEvent]:
        check_read_limit(limit)
        if from_version > I64_MAX:  # SQLite integers are 64-bit: nothing is stored beyond
            return []
        sql = (
            f"SELECT {COLUMNS} FROM events WHERE stream = ? AND version >= ? "
            "ORDER BY version LIMIT ?"
        )
        return await self._read_events(sql, (stream, max(from_version, 1), limit))

    async def read_all(
        self,
        from_position: int = 1,
        limit: int = DEFAULT_READ_LIMIT,
        filter: EventFilter = NO_FILTER,
    ) -> list[StoredEvent]:
        check_read_limit(limit)
        # SQLite integers are 64-bit; a bound beyond them is decided here (a time range can
        # reach past 2262 or before 1678, a position past 2**63): match nothing or drop it.
        if (
            from_position > I64_MAX
            or filter.from_time_ns > I64_MAX
            or (filter.to_time_ns and filter.to_time_ns <= I64_MIN)
        ):
            return []
        where = ["global_position >= ?"]
        args: list[object] = [max(from_position, 1)]
        for column in ("service", "instance", "upstream"):
            value = getattr(filter, column)
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        if filter.types:
            where.append(f"type IN ({', '.join('?' * len(filter.types))})")
            args.extend(filter.types)
        if filter.from_time_ns and filter.from_time_ns > I64_MIN:
            where.append("occurred_at_ns >= ?")
            args.append(filter.from_time_ns)
        if filter.to_time_ns and filter.to_time_ns <= I64_MAX:
            where.append("occurred_at_ns < ?")
            args.append(filter.to_time_ns)
        sql = (
            f"SELECT {COLUMNS} FROM events WHERE {' AND '.join(where)} "
            "ORDER BY global_position LIMIT ?"
        )
        args.append(limit)
        return await self._read_events(sql, tuple(args))

    async def head_position(self) -> int:
        rows = await self._read(HEAD_SQL, ())
        head: int = rows[0][0]
        return head

    async def anchors(self) -> dict[str, RetentionAnchor]:
        return await self._read_with(load_anchors)

    async def stream_head(self, stream: str) -> tuple[int, bytes]:
        version, hash_ = await self._read_with(lambda conn: head_row(conn, stream))
        return (version, hash_) if version else (0, b"")

    async def anchor(self, stream: str) -> RetentionAnchor | None:
        return await self._read_with(lambda conn: load_anchor(conn, stream))

    async def cut(self, stream: str, through_version: int, cut_at_ns: int) -> RetentionAnchor:
        if through_version < 1:
            raise ValueError(f"through_version: must be >= 1, got {through_version}")
        anchor: RetentionAnchor = await self._submit(
            CutJob(stream=stream, through_version=through_version, cut_at_ns=cut_at_ns)
        )
        return anchor

    async def streams(self) -> list[str]:
        rows = await self._read(STREAMS_SQL, ())
        return [row[0] for row in rows]

    async def load_checkpoint(self, name: str) -> tuple[int, bytes] | None:
        rows = await self._read("SELECT position, state FROM checkpoints WHERE name = ?", (name,))
        if not rows:
            return None
        return int(rows[0][0]), bytes(rows[0][1])

    async def wait_for_append(self, after_position: int, timeout_s: float) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout_s, 0.0)
        while self._writer.committed_head <= after_position and not self._closed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            waiter: asyncio.Future[None] = loop.create_future()
            entry = (loop, waiter)
            with self._waiters_lock:
                self._waiters.append(entry)
            try:
                if self._writer.committed_head > after_position:  # committed while we registered
                    break
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                break
            finally:
                with self._waiters_lock:
                    if entry in self._waiters:
                        self._waiters.remove(entry)
        return self._writer.committed_head

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.stop()
        await asyncio.to_thread(self._writer.join)
        self._readers.shutdown(wait=True)
        with self._read_conns_lock:
            for conn in self._read_conns:
                conn.close()
            self._read_conns.clear()
        self._writer_conn.close()
        self._wake_waiters()

    # --- plumbing ----------------------------------------------------------------------------

    async def _submit(self, job: Job) -> Any:
        if self._closed:
            raise StoreError("the store is closed")
        self._writer.put(job)
        return await asyncio.wrap_future(job.future)

    async def _read(self, sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        if self._closed:
            raise StoreError("the store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._read_blocking, sql, args)

    async def _read_events(self, sql: str, args: tuple[object, ...]) -> list[StoredEvent]:
        rows = await self._read(sql, args)
        return [StoredEvent(*row) for row in rows]

    async def _read_with(self, query: Callable[[sqlite3.Connection], _R]) -> _R:
        """Run ``query`` on a reader thread's connection."""
        if self._closed:
            raise StoreError("the store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._readers, lambda: query(self._reader_connection())
        )

    def _read_blocking(self, sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        return self._reader_connection().execute(sql, args).fetchall()

    def _reader_connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=1")
            self._local.conn = conn
            with self._read_conns_lock:
                self._read_conns.append(conn)
        return conn

    def _wake_waiters(self) -> None:
        with self._waiters_lock:
            waiters, self._waiters = self._waiters, []
        for loop, waiter in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, waiter)
            except RuntimeError:  # that loop is closed; nobody is waiting any more
                pass


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
