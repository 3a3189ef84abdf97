"""The store contract suite, run against the SQLite adapter (a fresh file per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sidecar.eventlog.port import EventStore
from sidecar.eventlog.sqlite.store import SqliteEventStore
from tests.contract.store_contract import EventStoreContract


class TestSqliteEventStore(EventStoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[EventStore]:
        store = SqliteEventStore(tmp_path / "events.db")
        yield store
        await store.close()
