"""Saved stream heads: ``heads`` finds every stream's head, and ``verify --against`` (run through
the CLI on a real SQLite file) fails for a log restored from an older copy or changed at a saved
version, and passes once the lost events are back."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sidecar.eventlog.heads import SavedHead, check_against, parse_heads, read_heads
from sidecar.eventlog.sqlite.store import SqliteEventStore
from tests.support.events import StreamFactory
from tests.support.procs import SIDECAR_BIN


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SIDECAR_BIN, "eventlog", *args],
                          capture_output=True, text=True, timeout=60, check=False)


async def _append(path: Path, factory: StreamFactory, count: int) -> None:
    store = SqliteEventStore(path)
    try:
        for _ in range(count):
            await store.append([factory.transition("payments")])
    finally:
        await store.close()


@pytest.mark.parametrize("count", [0, 1, 2, 3, 7, 8, 33])
async def test_heads_are_the_last_version_and_hash_of_every_stream(
        tmp_path: Path, count: int) -> None:
    path = tmp_path / "events.db"
    await _append(path, StreamFactory("checkout", "pod-1"), count)
    await _append(path, StreamFactory("billing", "pod-1"), 2)
    store = SqliteEventStore(path)
    try:
        heads = {head.stream: head for head in await read_heads(store)}
        last = await store.read_stream("checkout/pod-1", max(1, count), 1)
    finally:
        await store.close()
    assert heads["billing/pod-1"].version == 2
    if count:
        assert heads["checkout/pod-1"] == SavedHead("checkout/pod-1", count, last[0].hash)
    else:
        assert "checkout/pod-1" not in heads


def test_parse_heads_reads_lines_and_arrays_and_names_a_bad_entry() -> None:
    line = '{"stream": "a/b", "version": 3, "hash": "00ff"}'
    assert parse_heads(line + "\n") == parse_heads(f"[{line}]") == [SavedHead("a/b", 3, b"\0\xff")]
    with pytest.raises(ValueError, match="entry 1"):
        parse_heads('{"stream": "a/b"}')
    with pytest.raises(ValueError, match="line 2"):
        parse_heads(line + "\nnot json")


async def test_verify_against_fails_on_a_restored_copy_and_passes_when_it_is_whole_again(
        tmp_path: Path) -> None:
    path, old = tmp_path / "events.db", tmp_path / "old.db"
    pod = StreamFactory("checkout", "pod-1")
    await _append(path, pod, 4)
    shutil.copy(path, old)
    await _append(path, pod, 3)
    heads_file = tmp_path / "heads.jsonl"
    saved = _cli("heads", "--store", f"sqlite:///{path}")
    assert saved.returncode == 0, saved.stderr
    heads_file.write_text(saved.stdout)
    assert parse_heads(saved.stdout)[0].version == 7
    store = SqliteEventStore(path)
    try:
        lost = [e.as_new_event() for e in await store.read_stream("checkout/pod-1", 5)]
    finally:
        await store.close()

    shutil.copy(old, path)  # the log restored from the earlier copy: whole by itself
    assert _cli("verify", "--store", f"sqlite:///{path}").returncode == 0
    behind = _cli("verify", "--store", f"sqlite:///{path}", "--against", str(heads_file))
    assert behind.returncode == 1
    assert "checkout/pod-1" in behind.stdout and "behind" in behind.stdout

    store = SqliteEventStore(path)  # what a sidecar re-ships: the same events again
    try:
        await store.append(lost)
        assert await check_against(store, parse_heads(heads_file.read_text())) == []
    finally:
        await store.close()
    whole = _cli("verify", "--store", f"sqlite:///{path}", "--against", str(heads_file))
    assert whole.returncode == 0, whole.stdout + whole.stderr


async def test_another_event_at_a_saved_version_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    await _append(path, StreamFactory("checkout", "pod-1"), 3)
    store = SqliteEventStore(path)
    try:
        heads = await read_heads(store)
    finally:
        await store.close()
    path.unlink()
    await _append(path, StreamFactory("checkout", "pod-1"), 5)  # another writer's chain
    store = SqliteEventStore(path)
    try:
        (lost,) = await check_against(store, heads)
    finally:
        await store.close()
    assert lost.found_version == 5 and "another event at version 3" in lost.problem
