"""The SQLite outbox: numbering in one place, a chain that survives restarts, a size bound that
never breaks the chain, pruning of what the log acknowledged, and the writer thread."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import pytest

from sidecar import chain
from sidecar.events.outbox import (
    GENESIS_HEAD,
    Outbox,
    OutboxError,
    OutboxLockedError,
    OutboxWriter,
    StreamHead,
)
from sidecar.events.producer import EventQueue
from tests.unit.events._support import STREAM, assert_chain, new_event


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "outbox.db"


def _started(outbox: Outbox, stream: str = STREAM) -> Outbox:
    """An outbox that knows the stream is new (as the shipper tells it after asking the log)."""
    outbox.rebase(stream, GENESIS_HEAD)
    return outbox


def test_events_are_numbered_in_arrival_order_with_a_hash_chain(path: Path) -> None:
    with _started(Outbox(path, max_events=100)) as outbox:
        events = [new_event() for _ in range(5)]
        assert outbox.append(events) == 5

        batch = outbox.next_batch(10)
    assert [e.event_id for e in batch] == [e.event_id for e in events]
    assert_chain(batch)


def test_versions_and_chain_continue_across_a_restart_with_the_same_file(path: Path) -> None:
    with _started(Outbox(path, max_events=100)) as outbox:
        outbox.append([new_event() for _ in range(3)])
        first = outbox.next_batch(10)
        outbox.acknowledge([e.event_id for e in first])  # shipped and pruned before the restart

    with Outbox(path, max_events=100) as reopened:
        assert reopened.head(STREAM) == StreamHead(3, bytes(first[-1].hash))
        reopened.append([new_event() for _ in range(2)])
        second = reopened.next_batch(10)
    assert_chain(second, first_version=4, prev_hash=bytes(first[-1].hash))


def test_unshipped_events_survive_a_restart(path: Path) -> None:
    with _started(Outbox(path, max_events=100)) as outbox:
        outbox.append([new_event() for _ in range(3)])
        before = outbox.next_batch(10)
    with Outbox(path, max_events=100) as reopened:
        assert reopened.stats().pending == 3
        assert reopened.next_batch(10) == before


def test_a_fresh_outbox_holds_events_unnumbered_until_the_log_tells_the_head(path: Path) -> None:
    log_head = StreamHead(41, b"\x07" * 32)  # the log already has 41 events of this stream
    with Outbox(path, max_events=100) as outbox:
        outbox.append([new_event() for _ in range(2)])
        assert outbox.head(STREAM) is None
        assert outbox.streams_awaiting_head() == [STREAM]
        assert outbox.next_batch(10) == []  # nothing ships with a guessed version
        assert outbox.stats().awaiting_head == 2

        outcome = outbox.rebase(STREAM, log_head)
        assert outcome.renumbered == 2 and outcome.head.version == 43
        assert outbox.streams_awaiting_head() == []
        assert_chain(outbox.next_batch(10), first_version=42, prev_hash=log_head.hash)


def test_conflict_rebase_drops_what_the_log_has_and_renumbers_the_rest(path: Path) -> None:
    with _started(Outbox(path, max_events=100)) as outbox:
        events = [new_event() for _ in range(4)]
        outbox.append(events)
        # the log stored our first event (answer lost) and another writer took versions 2..3
        log_head = StreamHead(3, b"\x09" * 32)
        outcome = outbox.rebase(STREAM, log_head, already_stored={events[0].event_id})

        assert outcome.already_stored == 1 and outcome.renumbered == 3
        batch = outbox.next_batch(10)
        assert [e.event_id for e in batch] == [e.event_id for e in events[1:]]
        assert_chain(batch, first_version=4, prev_hash=log_head.hash)
        outbox.append([new_event()])  # later events continue the rebased chain
        assert outbox.next_batch(10)[-1].version == 7


def test_full_outbox_refuses_new_events_and_keeps_the_old_ones(path: Path) -> None:
    with _started(Outbox(path, max_events=3)) as outbox:
        kept = [new_event() for _ in range(3)]
        assert outbox.append(kept) == 3
        assert outbox.append([new_event(), new_event()]) == 0

        stats = outbox.stats()
        assert stats.pending == 3 and stats.refused == 2
        batch = outbox.next_batch(10)
        assert [e.event_id for e in batch] == [e.event_id for e in kept]
        assert_chain(batch)  # refused events never got a version: no hole

        outbox.acknowledge([kept[0].event_id])
        late = new_event()
        assert outbox.append([late]) == 1
        assert outbox.next_batch(10)[-1].event_id == late.event_id
        assert outbox.next_batch(10)[-1].version == 4


def test_a_batch_larger_than_the_room_left_is_accepted_in_part(path: Path) -> None:
    with _started(Outbox(path, max_events=4)) as outbox:
        outbox.append([new_event()])
        assert outbox.append([new_event() for _ in range(5)]) == 3
        assert outbox.stats().refused == 2


def test_acknowledged_events_are_pruned(path: Path) -> None:
    with _started(Outbox(path, max_events=100)) as outbox:
        outbox.append([new_event() for _ in range(5)])
        batch = outbox.next_batch(3)
        assert outbox.acknowledge([e.event_id for e in batch]) == 3
        assert outbox.stats().pending == 2
        assert [e.version for e in outbox.next_batch(10)] == [4, 5]
    rows = sqlite3.connect(path).execute("SELECT COUNT(*) FROM events").fetchone()[0]
    assert rows == 2


def test_stats_report_the_oldest_unshipped_event(path: Path) -> None:
    with _started(Outbox(path, max_events=100)) as outbox:
        assert outbox.stats().oldest_pending_occurred_at_ns is None
        first = new_event(occurred_at_ns=1_700_000_000_000_000_000)
        outbox.append([first, new_event(occurred_at_ns=1_700_000_005_000_000_000)])
        assert outbox.stats().oldest_pending_occurred_at_ns == 1_700_000_000_000_000_000
        outbox.acknowledge([first.event_id])
        assert outbox.stats().oldest_pending_occurred_at_ns == 1_700_000_005_000_000_000


def test_a_second_process_cannot_open_the_same_outbox(path: Path) -> None:
    with Outbox(path, max_events=10), pytest.raises(OutboxLockedError, match="another process"):
        Outbox(path, max_events=10)


def test_an_outbox_of_another_schema_version_is_refused(path: Path) -> None:
    Outbox(path, max_events=10).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(OutboxError, match="schema version 99"):
        Outbox(path, max_events=10)


def test_outbox_uses_wal(path: Path) -> None:
    Outbox(path, max_events=10).close()
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_streams_are_numbered_independently(path: Path) -> None:
    with _started(_started(Outbox(path, max_events=100)), "checkout/pod-2") as outbox:
        outbox.append([new_event(), new_event("checkout/pod-2"), new_event()])
        batch = outbox.next_batch(10)
    assert [(e.stream, e.version) for e in batch] == [
        (STREAM, 1), ("checkout/pod-2", 1), (STREAM, 2)]
    assert_chain([e for e in batch if e.stream == STREAM])


# --- the writer thread ---------------------------------------------------------------------


def test_writer_moves_queued_events_into_the_outbox_and_wakes_the_shipper(path: Path) -> None:
    queue = EventQueue(100)
    woken: list[int] = []
    with _started(Outbox(path, max_events=100)) as outbox:
        writer = OutboxWriter(queue, outbox, batch_size=2, on_written=lambda: woken.append(1))
        for _ in range(3):
            queue.offer(new_event())
        assert writer.write_once(timeout_s=0) == 2
        assert writer.write_once(timeout_s=0) == 1
        assert writer.write_once(timeout_s=0) == 0
        assert len(woken) == 2
        assert_chain(outbox.next_batch(10))


def test_writer_logs_loudly_when_the_outbox_is_full(path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    queue = EventQueue(100)
    with _started(Outbox(path, max_events=1)) as outbox, \
            caplog.at_level(logging.ERROR, logger="sidecar.events"):
        writer = OutboxWriter(queue, outbox, batch_size=10)
        for _ in range(3):
            queue.offer(new_event())
        writer.write_once(timeout_s=0)
        assert outbox.stats().refused == 2
    assert "outbox" in caplog.text and "is full" in caplog.text


def test_writer_keeps_the_batch_when_the_disk_write_fails(path: Path) -> None:
    queue = EventQueue(100)
    with _started(Outbox(path, max_events=100)) as outbox:
        writer = OutboxWriter(queue, outbox, batch_size=10)
        queue.offer(new_event())
        real_append = outbox.append
        outbox.append = _failing  # type: ignore[method-assign]
        with pytest.raises(sqlite3.OperationalError):
            writer.write_once(timeout_s=0)
        outbox.append = real_append  # type: ignore[method-assign]
        assert writer.write_once(timeout_s=0) == 1
        assert outbox.stats().pending == 1


def _failing(events: object) -> int:
    raise sqlite3.OperationalError("disk I/O error")


def test_writer_thread_writes_what_is_queued_before_it_stops(path: Path) -> None:
    queue = EventQueue(1000)
    with _started(Outbox(path, max_events=1000)) as outbox:
        writer = OutboxWriter(queue, outbox, batch_size=50)
        writer.start()
        for _ in range(300):
            queue.offer(new_event())
        assert writer.stop(timeout_s=30.0)
        assert outbox.stats().pending == 300
        assert_chain(outbox.next_batch(1000))


def test_concurrent_transitions_get_distinct_versions_and_one_chain(path: Path) -> None:
    queue = EventQueue(10_000)
    with _started(Outbox(path, max_events=10_000)) as outbox:
        writer = OutboxWriter(queue, outbox, batch_size=64)
        writer.start()

        def produce() -> None:
            for _ in range(250):
                queue.offer(new_event())

        producers = [threading.Thread(target=produce) for _ in range(4)]
        for thread in producers:
            thread.start()
        for thread in producers:
            thread.join()
        assert writer.stop(timeout_s=30.0)
        batch = outbox.next_batch(10_000)
    assert len(batch) == 1000
    assert_chain(batch)
    assert chain.proto_hash(batch[-1]) == bytes(batch[-1].hash)


def test_an_event_id_already_in_the_outbox_takes_no_version(path: Path) -> None:
    with _started(Outbox(path, max_events=100)) as outbox:
        event = new_event()
        again = new_event(event_id=event.event_id)
        outbox.append([event, again, new_event()])
        batch = outbox.next_batch(10)
    assert len(batch) == 2
    assert_chain(batch)


def test_acknowledged_head_and_events_are_kept_up_to_keep_acked(tmp_path: Path) -> None:

    with Outbox(tmp_path / "keep.db", max_events=100, keep_acked=3) as box:
        box.rebase("checkout/pod-1", GENESIS_HEAD)
        events = [new_event() for _ in range(5)]
        box.append(events)
        assert box.acknowledged_head("checkout/pod-1") is None
        box.acknowledge([e.event_id for e in events])
        head = box.acknowledged_head("checkout/pod-1")
        assert head is not None and head.version == 5 and head.hash == bytes(events[4].hash)
        kept = box.acknowledged_events("checkout/pod-1")
        assert [e.version for e in kept] == [3, 4, 5]
        assert box.stats().pending == 0


def test_requeued_acknowledged_events_are_renumbered_with_the_same_versions_and_hashes(
        tmp_path: Path) -> None:

    stream = "checkout/pod-1"
    with Outbox(tmp_path / "requeue.db", max_events=100) as box:
        box.rebase(stream, GENESIS_HEAD)
        events = [new_event() for _ in range(4)]
        box.append(events)
        box.acknowledge([e.event_id for e in events])
        later = new_event()
        box.append([later])  # unshipped, version 5
        log_head = StreamHead(2, bytes(events[1].hash))
        assert box.requeue_acked(stream, 2, log_head) == 2
        batch = box.next_batch(10)
        assert [e.event_id for e in batch] == [events[2].event_id, events[3].event_id,
                                                later.event_id]
        assert [bytes(e.hash) for e in batch[:2]] == [bytes(e.hash) for e in events[2:]]
        assert batch[2].version == 5 and bytes(batch[2].hash) == bytes(later.hash)
        assert box.acknowledged_head(stream) == log_head


def test_an_event_the_log_stored_at_another_version_does_not_move_the_acknowledged_head(
        tmp_path: Path) -> None:
    with Outbox(tmp_path / "elsewhere.db", max_events=100) as box:
        box.rebase(STREAM, GENESIS_HEAD)
        first, second = new_event(), new_event()
        box.append([first, second])
        box.acknowledge([first.event_id])
        box.acknowledge([second.event_id], stored_elsewhere=[second.event_id])
        assert box.acknowledged_head(STREAM) == StreamHead(1, bytes(first.hash))
        assert [e.event_id for e in box.acknowledged_events(STREAM)] == [first.event_id]
        assert box.stats().pending == 0
