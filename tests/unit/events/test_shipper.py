"""The shipper against an in-memory event log with the real log's rules, driven step by step
with a hand-moved clock and a seeded random generator (no sleeping)."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.breaker import State
from sidecar.events.outbox import GENESIS_HEAD, Outbox
from sidecar.events.settings import EventsSettings
from sidecar.events.shipper import Backoff, Shipper
from tests.unit.events._support import STREAM, FakeClock, FakeEventLog, assert_chain, new_event

SETTINGS = EventsSettings(batch_size=3, backoff_base_ms=200, backoff_max_ms=5_000,
                          backoff_jitter=0.5, flush_interval_ms=1_000, linger_ms=0)


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / "outbox.db", max_events=1000) as box:
        yield box


@pytest.fixture
def log() -> FakeEventLog:
    return FakeEventLog()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _shipper(outbox: Outbox, log: FakeEventLog, clock: FakeClock,
             settings: EventsSettings = SETTINGS, seed: int = 7) -> Shipper:
    return Shipper(outbox, log, settings, clock=clock, rng=random.Random(seed))


def _run(shipper: Shipper, clock: FakeClock, steps: int = 100) -> None:
    """Step until idle, moving the clock over every wait."""
    for _ in range(steps):
        delay = shipper.step()
        if shipper.idle:
            return
        clock.advance(delay)
    raise AssertionError("shipper did not become idle")


def test_new_stream_is_looked_up_in_the_log_then_shipped_in_batches_and_pruned(
        outbox: Outbox, log: FakeEventLog, clock: FakeClock) -> None:
    events = [new_event() for _ in range(7)]
    outbox.append(events)
    shipper = _shipper(outbox, log, clock)

    _run(shipper, clock)

    stored = log.events()
    assert [e.event_id for e in stored] == [e.event_id for e in events]
    assert_chain(stored)
    assert log.append_calls == 3  # batches of 3, 3, 1
    assert outbox.stats().pending == 0
    assert shipper.stats().shipped == 7


def test_a_wiped_outbox_continues_the_chain_the_log_already_has(
        outbox: Outbox, log: FakeEventLog, clock: FakeClock) -> None:
    log.seed(STREAM, 37)  # what this sidecar shipped before its outbox file was deleted
    head = log.events()[-1]
    outbox.append([new_event(), new_event()])

    _run(_shipper(outbox, log, clock), clock)

    stored = log.events()
    assert len(stored) == 39
    assert_chain(stored[37:], first_version=38, prev_hash=bytes(head.hash))
    assert log.read_calls <= 2 * 6 + 2  # a galloping search, not a full scan


def test_a_retry_after_a_lost_answer_is_a_harmless_duplicate(
        outbox: Outbox, log: FakeEventLog, clock: FakeClock) -> None:
    outbox.rebase(STREAM, GENESIS_HEAD)
    outbox.append([new_event() for _ in range(3)])
    log.lose_answers = 1  # the log stores the batch, the answer never arrives
    shipper = _shipper(outbox, log, clock)

    _run(shipper, clock)

    assert len(log.events()) == 3  # exactly once
    stats = shipper.stats()
    assert stats.shipped == 3 and stats.duplicates == 3
    assert stats.failures == {"DEADLINE_EXCEEDED": 1}
    assert outbox.stats().pending == 0


def test_backoff_doubles_from_base_to_the_cap_with_jitter_below_the_ceiling() -> None:
    backoff = Backoff(base_s=0.2, max_s=5.0, multiplier=2.0, jitter=0.5)
    assert [backoff.ceiling_s(n) for n in range(1, 8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert backoff.ceiling_s(10_000) == 5.0  # no overflow however long the outage
    rng = random.Random(3)
    for failures in range(1, 30):
        delay = backoff.delay_s(failures, rng)
        assert backoff.ceiling_s(failures) * 0.5 <= delay <= backoff.ceiling_s(failures)


def test_backoff_schedule_while_the_log_is_down_then_the_breaker_stops_calling(
        outbox: Outbox, log: FakeEventLog, clock: FakeClock) -> None:
    outbox.rebase(STREAM, GENESIS_HEAD)
    outbox.append([new_event()])
    log.down = True
    shipper = _shipper(outbox, log, clock, seed=11)
    expected_rng = random.Random(11)

    delays = []
    for failures in (1, 2, 3):  # the breaker trips on the third failure in a row
        delay = shipper.step()
        delays.append(delay)
        assert log.append_calls == failures
        clock.advance(delay)
    expected = [Backoff.from_settings(SETTINGS).delay_s(n, expected_rng) for n in (1, 2)]
    assert delays[:2] == pytest.approx(expected)  # 0.2 s and 0.4 s, jittered down by <= 50 %
    assert shipper.stats().breaker_state is State.OPEN

    calls = log.append_calls
    waits = [shipper.step() for _ in range(5)]  # open: no call to the log at all
    assert log.append_calls == calls
    assert all(wait > 0 for wait in waits)
    assert shipper.stats().failures == {"UNAVAILABLE": 3}


def test_shipping_resumes_when_the_log_comes_back(
        outbox: Outbox, log: FakeEventLog, clock: FakeClock) -> None:
    outbox.rebase(STREAM, GENESIS_HEAD)
    outbox.append([new_event() for _ in range(4)])
    log.down = True
    shipper = _shipper(outbox, log, clock)
    for _ in range(6):
        clock.advance(shipper.step())
    assert log.events() == []

    log.down = False
    clock.advance(60.0)  # past any open period
    _run(shipper, clock)

    assert len(log.events()) == 4
    assert shipper.stats().breaker_state is State.CLOSED
    assert outbox.stats().pending == 0


def test_conflict_is_logged_counted_and_resolved_by_renumbering_after_the_logs_head(
        outbox: Outbox, log: FakeEventLog, clock: FakeClock,
        caplog: pytest.LogCaptureFixture) -> None:
    outbox.rebase(STREAM, GENESIS_HEAD)  # we believe the stream is new...
    ours = [new_event() for _ in range(3)]
    outbox.append(ours)
    log.seed(STREAM, 2)  # ...but another writer got there first
    shipper = _shipper(outbox, log, clock)

    with caplog.at_level(logging.ERROR, logger="sidecar.events"):
        _run(shipper, clock)

    stored = log.events()
    assert [e.event_id for e in stored[2:]] == [e.event_id for e in ours]
    assert_chain(stored)
    assert shipper.stats().failures == {"FAILED_PRECONDITION": 1}
    assert "FAILED_PRECONDITION" in caplog.text


def test_conflict_after_a_lost_answer_does_not_ship_twice(
        outbox: Outbox, log: FakeEventLog, clock: FakeClock) -> None:
    outbox.rebase(STREAM, GENESIS_HEAD)
    first, second = new_event(), new_event()
    outbox.append([first])
    log.lose_answers = 1
    shipper = _shipper(outbox, log, clock)
    clock.advance(shipper.step())  # stored, answer lost
    log.seed(STREAM, 1)  # another writer appends right after our event
    outbox.append([second])

    _run(shipper, clock)

    ids = [e.event_id for e in log.events()]
    assert ids.count(first.event_id) == 1 and ids.count(second.event_id) == 1
    assert_chain(log.events())


def test_a_conflict_that_persists_backs_off_instead_of_spinning(
        outbox: Outbox, clock: FakeClock) -> None:
    class AlwaysConflicting(FakeEventLog):
        def append(self, events, timeout_s):  # type: ignore[no-untyped-def]
            self.seed(STREAM, 1)  # a racing writer wins every time
            return super().append(events, timeout_s)

    log = AlwaysConflicting()
    outbox.rebase(STREAM, GENESIS_HEAD)
    outbox.append([new_event()])
    shipper = _shipper(outbox, log, clock)

    end = clock.now + 60.0
    waits = []
    while clock.now < end:  # one simulated minute of a conflict that never goes away
        wait = shipper.step()
        waits.append(wait)
        clock.advance(wait)
    # a hot loop would make thousands of calls; backoff (capped at 5 s, jittered to >= 2.5 s)
    # allows a few dozen at most
    assert log.append_calls <= 30
    assert max(waits) >= 2.5
    assert shipper.stats().failures["FAILED_PRECONDITION"] == log.append_calls


def test_a_refusal_keeps_the_events_and_backs_off(
        outbox: Outbox, log: FakeEventLog, clock: FakeClock) -> None:
    class Refusing(FakeEventLog):
        def append(self, events, timeout_s):  # type: ignore[no-untyped-def]
            from sidecar.events.shipper import ExportError
            self.append_calls += 1
            raise ExportError("UNAUTHENTICATED", "missing bearer token")

    refusing = Refusing()
    outbox.rebase(STREAM, GENESIS_HEAD)
    outbox.append([new_event()])
    shipper = _shipper(outbox, refusing, clock)
    waits = []
    for _ in range(4):
        waits.append(shipper.step())
        clock.advance(waits[-1])
    assert outbox.stats().pending == 1
    assert refusing.append_calls == 4
    assert waits[-1] > waits[0]  # 4th wait >= 0.8 s (1.6 s less <= 50 %), 1st <= 0.2 s
    # a refusal is an answer from a healthy log: the breaker stays closed
    assert shipper.stats().breaker_state is State.CLOSED


def test_a_partial_batch_lingers_so_a_storm_costs_few_appends(
        outbox: Outbox, log: FakeEventLog, clock: FakeClock) -> None:
    settings = EventsSettings(batch_size=3, linger_ms=100)
    outbox.rebase(STREAM, GENESIS_HEAD)
    shipper = _shipper(outbox, log, clock, settings)
    outbox.append([new_event()])
    assert shipper.step() == pytest.approx(0.1)  # one event: wait for company
    clock.advance(0.05)
    outbox.append([new_event()])
    assert shipper.step() == pytest.approx(0.05)  # the linger is not restarted
    assert log.append_calls == 0
    clock.advance(0.05)
    assert shipper.step() == 0.0
    assert log.append_calls == 1 and len(log.events()) == 2

    outbox.append([new_event() for _ in range(3)])  # a full batch goes at once
    assert shipper.step() == 0.0
    assert log.append_calls == 2 and len(log.events()) == 5


def test_idle_shipper_waits_the_flush_interval(
        outbox: Outbox, log: FakeEventLog, clock: FakeClock) -> None:
    shipper = _shipper(outbox, log, clock)
    assert shipper.step() == pytest.approx(1.0)
    assert shipper.idle and log.append_calls == 0


def test_stop_ships_what_is_left_within_the_timeout(outbox: Outbox, log: FakeEventLog) -> None:
    outbox.rebase(STREAM, GENESIS_HEAD)
    shipper = Shipper(outbox, log, SETTINGS)
    shipper.start()
    outbox.append([new_event() for _ in range(10)])
    assert shipper.stop(timeout_s=10.0)
    assert len(log.events()) == 10 and log.closed


def test_stop_with_the_log_down_leaves_events_in_the_outbox(outbox: Outbox,
                                                            log: FakeEventLog) -> None:
    outbox.rebase(STREAM, GENESIS_HEAD)
    outbox.append([new_event() for _ in range(2)])
    log.down = True
    shipper = Shipper(outbox, log, SETTINGS)
    shipper.start()
    assert shipper.stop(timeout_s=0.5)
    assert outbox.stats().pending == 2 and log.closed
