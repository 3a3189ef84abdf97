"""A real ``sidecar eventlog serve`` on SQLite is restored from an earlier copy of its file while
two sidecars keep producing: they detect the rollback on reconnect, re-ship what the log lost, and
afterwards every event is in the log exactly once, the chains are whole, and ``verify --against``
the heads saved before the restore passes (it failed right after the restore)."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from tests.integration.eventlog._rollback import rollback_scenario
from tests.integration.eventlog._server import EventLogProcess


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EventLogProcess]:
    with EventLogProcess(tmp_path) as process:
        yield process


def test_a_log_restored_from_an_earlier_copy_under_traffic_is_made_whole_by_the_sidecars(
        tmp_path: Path, server: EventLogProcess) -> None:
    copy = tmp_path / "backup.db"

    def take_copy() -> None:
        # a consistent copy of the live log; both connections closed at once (a connection left
        # to the garbage collector would checkpoint its WAL into the restored file later)
        with closing(sqlite3.connect(server.db)) as live, \
                closing(sqlite3.connect(copy)) as backup:
            live.backup(backup)

    def restore() -> None:
        for suffix in ("-wal", "-shm"):
            Path(f"{server.db}{suffix}").unlink(missing_ok=True)
        shutil.copy(copy, server.db)

    rollback_scenario(tmp_path, server, take_copy, restore)
