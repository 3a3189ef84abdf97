"""Rollback detection by the shipper: an in-memory event log restored to an earlier copy (or
overwritten by another writer) is noticed on (re)connect and on a conflict, repaired from the
outbox's kept acknowledged events, counted once and recorded, driven by a hand-moved clock."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar import chain
from sidecar.events.outbox import GENESIS_HEAD, Outbox, StreamHead
from sidecar.events.rollback import REASON_HASH_MISMATCH, REASON_HEAD_BEHIND, classify
from sidecar.events.settings import EventsSettings
from sidecar.events.shipper import Shipper
from sidecar.v1 import events_pb2
from tests.unit.events._support import STREAM, FakeClock, FakeEventLog, assert_chain, new_event

SETTINGS = EventsSettings(batch_size=4, backoff_base_ms=200, backoff_max_ms=2_000,
                          backoff_jitter=0.5, flush_interval_ms=1_000, linger_ms=0)


def _run(shipper: Shipper, clock: FakeClock, steps: int = 200) -> None:
    for _ in range(steps):
        delay = shipper.step()
        if shipper.idle:
            return
        clock.advance(delay)
    raise AssertionError("shipper did not become idle")


def _restore(log: FakeEventLog, keep: int, stream: str = STREAM) -> None:
    """The log as an older copy of itself: only its first ``keep`` events of ``stream``."""
    for event in log.streams[stream][keep:]:
        del log.by_id[event.event_id]
    log.streams[stream] = log.streams[stream][:keep]


def _shipped(outbox: Outbox, log: FakeEventLog, clock: FakeClock, count: int) -> Shipper:
    shipper = Shipper(outbox, log, SETTINGS, clock=clock, rng=random.Random(3))
    outbox.append([new_event() for _ in range(count)])
    _run(shipper, clock)
    return shipper


def _rollback_events(log: FakeEventLog) -> list[events_pb2.LogRollbackDetected]:
    return [e.log_rollback_detected for e in log.events() if e.type == "LogRollbackDetected"]


def _assert_whole(log: FakeEventLog) -> None:
    stored = log.events()
    assert_chain(stored)
    assert len({e.event_id for e in stored}) == len(stored)


def test_classify_names_a_head_behind_and_a_different_hash_and_nothing_else() -> None:
    acked = StreamHead(5, b"h5")
    assert classify(acked, StreamHead(4, b"x"), None) == REASON_HEAD_BEHIND
    assert classify(acked, StreamHead(0, chain.GENESIS_HASH), None) == REASON_HEAD_BEHIND
    assert classify(acked, StreamHead(5, b"other"), b"other") == REASON_HASH_MISMATCH
    assert classify(acked, StreamHead(8, b"h8"), b"h5") is None
    assert classify(None, GENESIS_HEAD, None) is None


def test_a_log_restored_from_an_earlier_copy_is_detected_at_start_and_made_whole(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock, log = FakeClock(), FakeEventLog()
    with Outbox(tmp_path / "o.db", max_events=1000) as outbox:
        _shipped(outbox, log, clock, 15)
        originals = log.events()
    _restore(log, 10)
    with Outbox(tmp_path / "o.db", max_events=1000) as outbox:  # a restarted sidecar
        outbox.append([new_event(), new_event()])
        shipper = Shipper(outbox, log, SETTINGS, clock=clock, rng=random.Random(3))
        with caplog.at_level(logging.ERROR, logger="sidecar.events"):
            _run(shipper, clock)
        assert shipper.stats().rollbacks == 1
    stored = log.events()
    _assert_whole(log)
    assert [bytes(e.hash) for e in stored[:15]] == [bytes(e.hash) for e in originals]
    assert len(stored) == 15 + 2 + 1 and stored[-1].type == "LogRollbackDetected"
    (record,) = _rollback_events(log)
    assert (record.acknowledged_version, record.found_version, record.reshipped, record.lost,
            record.reason, record.stream) == (15, 10, 5, 0, REASON_HEAD_BEHIND, STREAM)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and STREAM in errors[0] and "15" in errors[0] and "10" in errors[0]


def test_a_rollback_while_the_log_was_unreachable_is_detected_on_reconnect(
        tmp_path: Path) -> None:
    clock, log = FakeClock(), FakeEventLog()
    with Outbox(tmp_path / "o.db", max_events=1000) as outbox:
        shipper = _shipped(outbox, log, clock, 12)
        log.down = True
        outbox.append([new_event()])
        for _ in range(3):
            clock.advance(shipper.step())
        _restore(log, 4)
        log.down = False
        _run(shipper, clock)
        assert shipper.stats().rollbacks == 1
    _assert_whole(log)
    assert len(log.events()) == 12 + 1 + 1
    (record,) = _rollback_events(log)
    assert (record.acknowledged_version, record.found_version, record.reshipped) == (12, 4, 8)


def test_a_rollback_first_seen_as_a_conflict_is_repaired_not_renumbered_over(
        tmp_path: Path) -> None:
    clock, log = FakeClock(), FakeEventLog()
    with Outbox(tmp_path / "o.db", max_events=1000) as outbox:
        shipper = _shipped(outbox, log, clock, 9)
        _restore(log, 6)  # no failed call in between: the next Append conflicts
        outbox.append([new_event()])
        _run(shipper, clock)
        assert shipper.stats().rollbacks == 1
    _assert_whole(log)
    assert len(log.events()) == 9 + 1 + 1


def test_events_pruned_beyond_keep_acked_are_reported_as_lost(tmp_path: Path) -> None:
    clock, log = FakeClock(), FakeEventLog()
    with Outbox(tmp_path / "o.db", max_events=1000, keep_acked=3) as outbox:
        _shipped(outbox, log, clock, 15)
    _restore(log, 10)
    with Outbox(tmp_path / "o.db", max_events=1000, keep_acked=3) as outbox:
        shipper = Shipper(outbox, log, SETTINGS, clock=clock, rng=random.Random(3))
        _run(shipper, clock)
    _assert_whole(log)
    (record,) = _rollback_events(log)
    assert (record.reshipped, record.lost) == (3, 2)
    assert len(log.events()) == 10 + 3 + 1


def test_another_writers_events_at_our_versions_are_reported_once_and_never_loop(
        tmp_path: Path) -> None:
    clock, log = FakeClock(), FakeEventLog()
    with Outbox(tmp_path / "o.db", max_events=1000) as outbox:
        shipper = _shipped(outbox, log, clock, 5)
        log.streams[STREAM] = []
        log.by_id.clear()
        log.seed(STREAM, 7)
        shipper.rollback.mark_all()
        _run(shipper, clock)
        appends = log.append_calls
        shipper.rollback.mark_all()  # another reconnect: the log's head is now the known one
        outbox.append([new_event()])
        _run(shipper, clock)
        assert shipper.stats().rollbacks == 1
        assert log.append_calls == appends + 1
    _assert_whole(log)
    (record,) = _rollback_events(log)
    assert (record.reason, record.reshipped, record.found_version) == (
        REASON_HASH_MISMATCH, 0, 7)


def test_a_log_that_kept_everything_is_not_a_rollback(tmp_path: Path) -> None:
    clock, log = FakeClock(), FakeEventLog()
    with Outbox(tmp_path / "o.db", max_events=1000) as outbox:
        shipper = _shipped(outbox, log, clock, 6)
        shipper.rollback.mark_all()
        outbox.append([new_event()])
        _run(shipper, clock)
        assert shipper.stats().rollbacks == 0
    assert _rollback_events(log) == []
    assert len(log.events()) == 7


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shipped=st.integers(1, 30), kept_by_log=st.integers(0, 30), keep_acked=st.integers(0, 40),
       later=st.integers(0, 5))
def test_any_rollback_leaves_a_whole_log_with_every_kept_event_once(
        tmp_path_factory: pytest.TempPathFactory, shipped: int, kept_by_log: int,
        keep_acked: int, later: int) -> None:
    kept_by_log = min(kept_by_log, shipped)
    path = tmp_path_factory.mktemp("prop") / "o.db"
    clock, log = FakeClock(), FakeEventLog()
    with Outbox(path, max_events=1000, keep_acked=keep_acked) as outbox:
        _shipped(outbox, log, clock, shipped)
    originals = log.events()
    _restore(log, kept_by_log)
    with Outbox(path, max_events=1000, keep_acked=keep_acked) as outbox:
        outbox.append([new_event() for _ in range(later)])
        shipper = Shipper(outbox, log, SETTINGS, clock=clock, rng=random.Random(3))
        _run(shipper, clock)
        assert shipper.stats().rollbacks == (1 if kept_by_log < shipped else 0)
    _assert_whole(log)
    stored_ids = {e.event_id for e in log.events()}
    held = min(keep_acked, shipped)
    assert {e.event_id for e in originals[shipped - held:]} <= stored_ids
    if kept_by_log < shipped:
        (record,) = _rollback_events(log)
        assert record.lost == max(0, shipped - kept_by_log - held)
        assert record.reshipped == min(held, shipped - kept_by_log)
