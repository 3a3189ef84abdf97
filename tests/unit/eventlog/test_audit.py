"""Audit: a whole log verifies; one changed byte in any stored field is found and named."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sidecar.eventlog.audit import verify
from sidecar.eventlog.sqlite.store import SqliteEventStore
from tests.support.events import StreamFactory

TAMPERED_STREAM = "checkout/pod-1"
TAMPERED_VERSION = 4  # a BreakerTransitioned: every column is non-empty


async def write_log(path: Path) -> int:
    """A log of three interleaved streams; returns the position of the event to tamper with."""
    store = SqliteEventStore(path)
    pod1, pod2 = StreamFactory("checkout", "pod-1"), StreamFactory("checkout", "pod-2")
    billing = StreamFactory("billing", "pod-1")
    try:
        await store.append([pod1.config_applied(["payments", "stock"])])
        for _ in range(4):
            await store.append([pod2.transition("stock"), billing.transition("payments")])
            await store.append([pod1.transition("payments"), pod1.mode_changed("stock")])
        target = await store.read_stream(TAMPERED_STREAM, TAMPERED_VERSION, limit=1)
        return target[0].global_position
    finally:
        await store.close()


def flip_one_byte(value: object) -> object:
    """The value with exactly one byte of its stored form changed."""
    if isinstance(value, bytes):
        return bytes([value[0] ^ 0x01]) + value[1:]
    if isinstance(value, int):
        return value ^ 0x100
    assert isinstance(value, str) and value
    index = len(value) // 2
    return value[:index] + chr(ord(value[index]) ^ 0x01) + value[index + 1 :]


async def test_whole_log_verifies(tmp_path: Path) -> None:
    await write_log(tmp_path / "events.db")
    store = SqliteEventStore(tmp_path / "events.db")
    try:
        report = await verify(store, page_events=3)
    finally:
        await store.close()

    assert report.ok, report.summary()
    assert (report.events_checked, report.streams_checked, report.head_position) == (17, 3, 17)
    assert report.sealed


async def test_empty_log_verifies(tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path / "events.db")
    try:
        report = await verify(store)
    finally:
        await store.close()

    assert report.ok and report.events_checked == 0


STORED_COLUMNS = [
    "event_id",
    "stream",
    "version",
    "type",
    "occurred_at_ns",
    "trace_id",
    "payload",
    "prev_hash",
    "hash",
    "service",
    "instance",
    "upstream",
    "recorded_at_ns",
    "record_hash",
]


@pytest.mark.parametrize("column", STORED_COLUMNS)
async def test_one_changed_byte_in_a_stored_field_fails_verify_naming_the_event(
    tmp_path: Path, column: str
) -> None:
    path = tmp_path / "events.db"
    position = await write_log(path)
    with sqlite3.connect(path) as db:
        (value,) = db.execute(
            f"SELECT {column} FROM events WHERE global_position = ?", (position,)
        ).fetchone()
        db.execute(
            f"UPDATE events SET {column} = ? WHERE global_position = ?",
            (flip_one_byte(value), position),
        )

    store = SqliteEventStore(path)
    try:
        report = await verify(store)
    finally:
        await store.close()

    assert not report.ok
    assert report.first_break is not None
    assert report.first_break.global_position == position
    assert report.first_break.version == flip_one_byte(TAMPERED_VERSION) or (
        report.first_break.version == TAMPERED_VERSION
    )
    if column != "stream":
        assert report.first_break.stream == TAMPERED_STREAM
    assert f"global position {position}" in report.summary()


async def test_changed_global_position_is_reported_as_the_missing_position(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    position = await write_log(path)
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE events SET global_position = global_position + 256 WHERE global_position = ?",
            (position,),
        )

    store = SqliteEventStore(path)
    try:
        report = await verify(store)
    finally:
        await store.close()

    assert report.first_break is not None
    assert f"position {position} is missing" in report.first_break.problem


async def test_truncated_tail_looks_like_a_shorter_whole_log_without_an_outside_anchor(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    await write_log(path)
    with sqlite3.connect(path) as db:
        head = db.execute("SELECT MAX(global_position) FROM events").fetchone()[0]
        db.execute("DELETE FROM events WHERE global_position = ?", (head,))

    store = SqliteEventStore(path)
    try:
        report = await verify(store)
    finally:
        await store.close()

    # The truncated tail is indistinguishable from a shorter log unless the head says so: the
    # SQLite head is MAX(global_position), so the log is whole again, just shorter.
    assert report.ok
    assert report.head_position == head - 1
