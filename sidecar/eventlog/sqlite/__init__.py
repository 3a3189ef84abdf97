"""SQLite adapter of the event store port: the embedded default, one file, no server to run.

- ``store``: ``SqliteEventStore`` (reads on a thread pool, ``wait_for_append``, close);
- ``writer``: the one writer thread and its group commit;
- ``append`` (the port's checks, then the insert) and ``retention`` (a cut, with its anchor),
  both run on the writer thread;
- ``schema``: tables and the queries writer and readers share;
- ``settings``: ``SqliteSettings`` and the ``sqlite:`` URL parsing.
"""

from sidecar.eventlog.sqlite.settings import SqliteSettings, sqlite_from_url
from sidecar.eventlog.sqlite.store import SqliteEventStore

__all__ = ["SqliteEventStore", "SqliteSettings", "sqlite_from_url"]
