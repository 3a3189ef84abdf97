"""What the SQLite adapter adds to the contract: durability across reopen, WAL readers, group
commit, settings, and ``open_store`` URLs."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

import pytest

from sidecar.eventlog.port import StoreError, open_store
from sidecar.eventlog.sqlite.settings import SqliteSettings
from sidecar.eventlog.sqlite.store import SqliteEventStore
from tests.support.events import StreamFactory


async def test_acknowledged_events_survive_reopening_and_stay_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    producer = StreamFactory()
    events = producer.transitions(5)
    store = SqliteEventStore(path)
    await store.append(events)
    await store.save_checkpoint("status", 5, b"{}")
    await store.close()

    reopened = SqliteEventStore(path)
    try:
        again = await reopened.append(events[2:3])
        after = await reopened.append([producer.transition()])

        assert (again[0].global_position, again[0].duplicate) == (3, True)
        assert after[0].global_position == 6
        assert await reopened.load_checkpoint("status") == (5, b"{}")
        assert [e.as_new_event() for e in await reopened.read_stream(producer.stream)][:5] == events
    finally:
        await reopened.close()


async def test_database_is_in_wal_mode_with_full_sync_by_default(tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path / "events.db")
    await store.close()

    with sqlite3.connect(tmp_path / "events.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.settings.synchronous == "FULL"


async def test_readers_see_committed_events_while_another_writer_holds_a_transaction(
    tmp_path: Path,
) -> None:
    store = SqliteEventStore(tmp_path / "events.db")
    try:
        await store.append([StreamFactory().transition()])
        blocker = sqlite3.connect(tmp_path / "events.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        blocker.execute("DELETE FROM events")  # uncommitted
        try:
            assert [e.global_position for e in await store.read_all()] == [1]
            assert await store.head_position() == 1
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
    finally:
        await store.close()


async def test_concurrent_appends_are_committed_together(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = SqliteEventStore(path, SqliteSettings(busy_timeout_s=60))
    try:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the writer's first group waits behind this lock
        producers = [StreamFactory("svc", f"pod-{i}") for i in range(20)]
        appends = [asyncio.create_task(store.append(p.transitions(3))) for p in producers]
        for _ in range(3):
            await asyncio.sleep(0)  # let every append reach the writer's queue
        blocker.execute("COMMIT")
        blocker.close()
        await asyncio.gather(*appends)

        commit_times = {e.recorded_at_ns for e in await store.read_all(limit=100)}
        # Every event of one group shares its commit time: 20 batches, at most 2 commits.
        assert len(commit_times) <= 2
        assert await store.head_position() == 60
    finally:
        await store.close()


async def test_closed_store_refuses_appends_and_reads(tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path / "events.db")
    await store.close()
    await store.close()  # idempotent

    with pytest.raises(StoreError, match="closed"):
        await store.append([StreamFactory().transition()])
    with pytest.raises(StoreError, match="closed"):
        await store.read_all()


def test_bad_settings_are_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SqliteSettings(synchronous="SOMETIMES")
    with pytest.raises(ValueError, match="read_threads"):
        SqliteSettings(read_threads=0)
    with pytest.raises(ValueError, match="max_group_events"):
        SqliteSettings(max_group_events=0)


async def test_open_store_opens_sqlite_urls_with_options(tmp_path: Path) -> None:
    store = open_store(f"sqlite://{tmp_path}/a/events.db?synchronous=NORMAL&read_threads=3")
    try:
        assert isinstance(store, SqliteEventStore)
        assert store.path == tmp_path / "a" / "events.db"
        assert (store.settings.synchronous, store.settings.read_threads) == ("NORMAL", 3)
    finally:
        await store.close()


async def test_open_store_takes_a_relative_sqlite_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:data/events.db")
    try:
        await store.append([StreamFactory().transition()])
        assert (tmp_path / "data" / "events.db").exists()
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres://db/events", "unknown store URL"),
        ("events.db", "unknown store URL"),
        ("sqlite://host/events.db", "names a host"),
        ("sqlite://", "no file path"),
        ("sqlite:///tmp/x.db?fsync=yes", "unknown sqlite option"),
        ("sqlite:///tmp/x.db?synchronous=SOMETIMES", "synchronous"),
    ],
)
def test_open_store_refuses_bad_urls_with_a_clear_message(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(url)


def test_opening_without_create_refuses_a_missing_file_and_creates_nothing(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no" / "such" / "events.db"

    with pytest.raises(StoreError, match="does not exist"):
        open_store(f"sqlite://{missing}", create=False)

    assert not (tmp_path / "no").exists()


async def test_opening_without_create_opens_an_existing_log(tmp_path: Path) -> None:
    await SqliteEventStore(tmp_path / "events.db").close()

    store = open_store(f"sqlite://{tmp_path}/events.db", create=False)

    try:
        assert await store.head_position() == 0
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("file_as_parent", "is not a folder"),
        ("folder_as_database", "unable to open database file"),
        ("not_a_database", "file is not a database"),
    ],
)
def test_a_path_that_cannot_hold_the_log_is_a_store_error_naming_it(
    tmp_path: Path, layout: str, message: str
) -> None:
    if layout == "file_as_parent":
        (tmp_path / "plain").write_text("x")
        path = tmp_path / "plain" / "events.db"
    elif layout == "folder_as_database":
        path = tmp_path / "events.db"
        path.mkdir()
    else:
        path = tmp_path / "events.db"
        path.write_bytes(b"this is not SQLite" * 100)

    with pytest.raises(StoreError, match=message) as raised:
        SqliteEventStore(path)

    assert str(path) in str(raised.value)


async def test_cancelled_appends_leave_the_log_whole_and_the_writer_running(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    store = SqliteEventStore(path, SqliteSettings(busy_timeout_s=60))
    try:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        producers = [StreamFactory("svc", f"pod-{i}") for i in range(10)]
        appends = [asyncio.create_task(store.append(p.transitions(2))) for p in producers]
        for _ in range(3):
            await asyncio.sleep(0)
        for task in appends[::2]:
            task.cancel()  # callers giving up (e.g. a gRPC deadline) while queued
        blocker.execute("COMMIT")
        blocker.close()
        results = await asyncio.gather(*appends, return_exceptions=True)

        late = await store.append([StreamFactory("svc", "late").transition()])
        stored = await store.read_all()
        assert [e.global_position for e in stored] == list(range(1, len(stored) + 1))
        assert late[0].global_position == len(stored)
        for producer, result in zip(producers, results, strict=True):
            if isinstance(result, list):  # answered: its events are there
                assert len(await store.read_stream(producer.stream)) == 2
    finally:
        await store.close()


async def test_a_batch_failing_unexpectedly_is_refused_alone(tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path / "events.db")
    try:
        good = StreamFactory("svc", "good").transitions(3)
        broken = dataclasses.replace(StreamFactory("svc", "bad").transition(), payload=None)  # type: ignore[arg-type]

        results = await asyncio.gather(
            store.append(good), store.append([broken]), return_exceptions=True
        )

        assert isinstance(results[0], list)
        assert isinstance(results[1], StoreError)
        assert await store.head_position() == 3
    finally:
        await store.close()
