"""An overloaded event log (RESOURCE_EXHAUSTED with ``grpc-retry-pushback-ms``): the shipper waits
at least the hint (jittered up, capped at its backoff max), counts it, keeps the events, logs
rate-limited, and delivers once the log takes them again. Hand-moved clock, seeded rng."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import pytest

from sidecar.events.exporter import _retry_hint_s, hinted_delay_s
from sidecar.events.outbox import GENESIS_HEAD, Outbox
from sidecar.events.settings import EventsSettings
from sidecar.events.shipper import Acknowledgement, ExportError, Shipper
from sidecar.v1 import events_pb2
from tests.unit.events._support import STREAM, FakeClock, FakeEventLog, new_event

SETTINGS = EventsSettings(batch_size=10, backoff_base_ms=100, backoff_max_ms=5_000,
                          backoff_jitter=0.5, flush_interval_ms=1_000, linger_ms=0)


class OverloadedLog(FakeEventLog):
    """Refuses the first ``refusals`` Appends with RESOURCE_EXHAUSTED and ``hint_s``."""

    def __init__(self, refusals: int, hint_s: float | None, rpc_s: float = 0.0) -> None:
        super().__init__()
        self.refusals = refusals
        self.hint_s = hint_s
        self.rpc_s = rpc_s
        self.refused_at: list[float] = []
        self.called_at: list[float] = []
        self.clock: FakeClock | None = None

    def append(self, events: Sequence[events_pb2.Event],
               timeout_s: float) -> list[Acknowledgement]:
        assert self.clock is not None
        self.called_at.append(self.clock())
        if self.refusals > 0:
            self.refusals -= 1
            self.append_calls += 1
            self.clock.advance(self.rpc_s)  # the refusal takes a while to arrive
            self.refused_at.append(self.clock())
            raise ExportError("RESOURCE_EXHAUSTED", "event log overloaded", self.hint_s)
        return super().append(events, timeout_s)


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / "outbox.db", max_events=1000) as box:
        box.rebase(STREAM, GENESIS_HEAD)
        yield box


def _drive(shipper: Shipper, clock: FakeClock, steps: int = 50) -> list[float]:
    waits = []
    for _ in range(steps):
        wait = shipper.step()
        if shipper.idle:
            return waits
        waits.append(wait)
        clock.advance(wait)
    raise AssertionError("shipper did not become idle")


def test_a_hinted_refusal_delays_the_next_attempt_by_at_least_the_hint(outbox: Outbox) -> None:
    clock = FakeClock()
    log = OverloadedLog(refusals=1, hint_s=2.0)
    log.clock = clock
    outbox.append([new_event() for _ in range(5)])
    shipper = Shipper(outbox, log, SETTINGS, clock=clock, rng=random.Random(3))

    wait = shipper.step()

    assert log.append_calls == 1
    assert 2.0 <= wait <= 2.0 * 1.5  # the hint, stretched by up to backoff_jitter
    assert wait > SETTINGS.backoff_base_ms / 1000  # not our own 0.1 s backoff
    clock.advance(wait / 2)
    assert shipper.step() > 0 and log.append_calls == 1  # too early: no call at all
    clock.advance(wait / 2)
    assert shipper.step() == 0.0 and log.append_calls == 2  # now it ships
    assert [e.event_id for e in log.events()] == [e.event_id for e in outbox.acknowledged_events(
        STREAM)]
    assert len(log.events()) == 5 and outbox.stats().pending == 0
    assert shipper.stats().failures == {"RESOURCE_EXHAUSTED": 1}


def test_the_hint_counts_from_the_refusal_not_from_the_start_of_the_call(
        outbox: Outbox) -> None:
    clock = FakeClock()
    log = OverloadedLog(refusals=1, hint_s=1.0, rpc_s=0.8)  # a slow answer, as under load
    log.clock = clock
    outbox.append([new_event()])
    shipper = Shipper(outbox, log, SETTINGS, clock=clock, rng=random.Random(3))

    _drive(shipper, clock)

    assert len(log.called_at) == 2
    assert log.called_at[1] - log.refused_at[0] >= 1.0


def test_a_hint_longer_than_the_backoff_cap_is_capped(outbox: Outbox) -> None:
    clock = FakeClock()
    log = OverloadedLog(refusals=1, hint_s=60.0)
    log.clock = clock
    outbox.append([new_event()])
    shipper = Shipper(outbox, log, SETTINGS, clock=clock, rng=random.Random(3))

    assert shipper.step() == pytest.approx(SETTINGS.backoff_max_ms / 1000)


def test_repeated_refusals_lose_nothing_and_are_logged_rate_limited(
        outbox: Outbox, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    log = OverloadedLog(refusals=6, hint_s=0.3)
    log.clock = clock
    events = [new_event() for _ in range(25)]
    outbox.append(events)
    shipper = Shipper(outbox, log, SETTINGS, clock=clock, rng=random.Random(5))

    with caplog.at_level(logging.WARNING, logger="sidecar.events"):
        _drive(shipper, clock)

    gaps = [b - a for a, b in zip(log.refused_at, log.refused_at[1:], strict=False)]
    assert len(gaps) == 5 and all(gap >= 0.3 for gap in gaps)  # never sooner than asked
    assert [e.event_id for e in log.events()] == [e.event_id for e in events]  # exactly once
    assert shipper.stats().failures == {"RESOURCE_EXHAUSTED": 6}
    overloaded = [r for r in caplog.records if "overloaded" in r.getMessage()]
    assert 1 <= len(overloaded) < 6  # the first at once, then at most one per interval
    # an overloaded log answered: no rollback check is forced on every refusal
    assert shipper.stats().rollbacks == 0


def test_hinted_delay_is_at_least_the_hint_and_our_backoff_and_at_most_the_cap() -> None:
    rng = random.Random(0)
    for _ in range(500):
        hint, backoff = rng.uniform(0, 3), rng.uniform(0, 3)
        delay = hinted_delay_s(hint, backoff, 2.5, 0.5, rng)
        assert delay <= 2.5
        assert delay >= min(2.5, max(hint, backoff))
        assert delay <= max(min(2.5, hint * 1.5), backoff)


class _RpcError(grpc.RpcError):
    def __init__(self, trailing: tuple[tuple[str, str], ...]) -> None:
        self._trailing = trailing

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailing


@pytest.mark.parametrize("trailing, expected", [
    ((("grpc-retry-pushback-ms", "1500"),), 1.5),
    ((), None),
    ((("grpc-retry-pushback-ms", "-1"),), None),  # "do not retry": our own backoff applies
    ((("grpc-retry-pushback-ms", "abc"),), None),
    ((("other", "1"),), None),
])
def test_the_exporter_reads_the_a6_hint_from_the_trailers(
        trailing: tuple[tuple[str, str], ...], expected: float | None) -> None:
    assert _retry_hint_s(_RpcError(trailing)) == expected


class _Failing(FakeEventLog):
    """Stores until ``error`` is set, then fails every Append with it."""

    error: ExportError | None = None

    def append(self, events: Sequence[events_pb2.Event],
               timeout_s: float) -> list[Acknowledgement]:
        if self.error is None:
            return super().append(events, timeout_s)
        self.append_calls += 1
        raise self.error


@pytest.mark.parametrize("error, recheck", [
    (ExportError("RESOURCE_EXHAUSTED", "event log overloaded", 0.5), False),
    (ExportError("RESOURCE_EXHAUSTED", "received message larger than max"), True),
    (ExportError("UNAVAILABLE", "connection refused", 0.5), True),
    (ExportError("UNAVAILABLE", "connection refused"), True),
])
def test_only_an_overloaded_log_skips_the_rollback_recheck_of_a_reconnect(
        outbox: Outbox, error: ExportError, recheck: bool) -> None:
    clock = FakeClock()
    log = _Failing()
    outbox.append([new_event()])
    shipper = Shipper(outbox, log, SETTINGS, clock=clock, rng=random.Random(3))
    _drive(shipper, clock)  # the log has acknowledged an event of the stream
    assert shipper.rollback.next_stream() is None
    log.error = error
    outbox.append([new_event()])

    shipper.step()

    assert log.append_calls == 2

    # a log that answered "overloaded" is the same log; one that went away may come back older
    assert (shipper.rollback.next_stream() is not None) is recheck
