"""The SQLite store's writer thread: the only write connection, and group commit.

Appends, cuts and checkpoint saves from any number of coroutines are queued as jobs; the thread
takes everything queued (up to ``max_group_events``) and stores it in one transaction, each job
inside its own SAVEPOINT, so one fsync covers many callers and a job that fails its checks is
rolled back alone. A job's future is completed only after that COMMIT returned, so an
acknowledged append is durable. Positions are assigned here (MAX + 1 inside the transaction),
never via AUTOINCREMENT, so a rolled-back batch gives its positions back.
"""

from __future__ import annotations

import concurrent.futures
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from sidecar.eventlog.port import NewEvent, StoreError
from sidecar.eventlog.sqlite.append import append_batch
from sidecar.eventlog.sqlite.retention import cut_stream
from sidecar.eventlog.sqlite.schema import HEAD_SQL
from sidecar.eventlog.sqlite.settings import SqliteSettings

__all__ = ["AppendJob", "CheckpointJob", "CutJob", "Job", "SqliteWriter"]


@dataclass(eq=False)
class Job:
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)

    def size(self) -> int:
        return 1


@dataclass(eq=False)
class AppendJob(Job):
    events: tuple[NewEvent, ...] = ()

    def size(self) -> int:
        return len(self.events)


@dataclass(eq=False)
class CutJob(Job):
    stream: str = ""
    through_version: int = 0
    cut_at_ns: int = 0


@dataclass(eq=False)
class CheckpointJob(Job):
    name: str = ""
    position: int = 0
    state: bytes = b""


_STOP: Final = Job()


class SqliteWriter:
    """The writer thread over ``conn`` (opened with the schema in place; the writer owns it).

    ``committed_head`` is the last committed global position (read from any thread);
    ``on_head_moved`` is called on the writer thread after each commit that moved it.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        settings: SqliteSettings,
        clock_ns: Callable[[], int],
        on_head_moved: Callable[[], None],
        name: str,
    ) -> None:
        self._conn = conn
        self._settings = settings
        self._clock_ns = clock_ns
        self._on_head_moved = on_head_moved
        self.committed_head: int = conn.execute(HEAD_SQL).fetchone()[0]
        self._last_recorded_at_ns = conn.execute(
            "SELECT COALESCE(MAX(recorded_at_ns), 0) FROM events"
        ).fetchone()[0]
        self._queue: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def put(self, job: Job) -> None:
        """Queue ``job``; its future is answered once the group it joins is committed."""
        self._queue.put(job)

    def stop(self) -> None:
        """Finish the jobs queued so far, refuse any later, and end the thread (then ``join``)."""
        self._queue.put(_STOP)

    def join(self) -> None:
        self._thread.join()

    def _main(self) -> None:
        stopping = False
        while not stopping:
            job = self._queue.get()
            if job is _STOP:
                break
            group: list[Job] = []
            size = 0
            while True:
                # A caller that gave up before its job started (cancelled) stores nothing;
                # once running, a job can no longer be cancelled and will be answered.
                if job.future.set_running_or_notify_cancel():
                    group.append(job)
                    size += job.size()
                if size >= self._settings.max_group_events:
                    break
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stopping = True
                    break
            if group:
                self._commit_group(group)
        # Anything still queued after close() raced with it: refuse rather than hang.
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP and job.future.set_running_or_notify_cancel():
                job.future.set_exception(StoreError("the store is closed"))

    def _commit_group(self, group: list[Job]) -> None:
        """One transaction for the whole group; each job inside its own SAVEPOINT."""
        conn = self._conn
        results: list[tuple[Job, object, Exception | None]] = []
        result: object
        try:
            conn.execute("BEGIN IMMEDIATE")
            next_position: int = conn.execute(HEAD_SQL).fetchone()[0] + 1
            recorded_at_ns = max(self._clock_ns(), self._last_recorded_at_ns)
            for job in group:
                conn.execute("SAVEPOINT job")
                try:
                    if isinstance(job, AppendJob):
                        result, next_position = append_batch(
                            conn, job.events, next_position, recorded_at_ns
                        )
                    elif isinstance(job, CutJob):
                        result = cut_stream(conn, job.stream, job.through_version, job.cut_at_ns)
                    else:
                        assert isinstance(job, CheckpointJob)
                        conn.execute(
                            "INSERT OR REPLACE INTO checkpoints (name, position, state, "
                            "saved_at_ns) VALUES (?, ?, ?, ?)",
                            (job.name, job.position, job.state, recorded_at_ns),
                        )
                        result = None
                    conn.execute("RELEASE job")
                    results.append((job, result, None))
                except sqlite3.DatabaseError as exc:
                    if not isinstance(exc, sqlite3.IntegrityError):
                        raise  # I/O or corruption: the whole group fails below
                    _rollback_job(conn)
                    results.append((job, None, StoreError(f"the database refused it: {exc}")))
                except Exception as exc:  # this batch is bad; the rest of the group goes on
                    _rollback_job(conn)
                    if not isinstance(exc, StoreError | ValueError):
                        exc = StoreError(f"the batch could not be stored: {exc!r}")
                    results.append((job, None, exc))
            conn.execute("COMMIT")
        except Exception as exc:  # the commit itself failed (disk full, I/O error, ...)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = StoreError(f"commit failed, nothing of this group was stored: {exc}")
            for job in group:
                job.future.set_exception(error)
            return
        self._last_recorded_at_ns = recorded_at_ns
        for done, value, failure in results:
            if failure is not None:
                done.future.set_exception(failure)
            else:
                done.future.set_result(value)
        if next_position - 1 > self.committed_head:
            self.committed_head = next_position - 1
            self._on_head_moved()


def _rollback_job(conn: sqlite3.Connection) -> None:
    conn.execute("ROLLBACK TO job")
    conn.execute("RELEASE job")
