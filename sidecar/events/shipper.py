"""Ships the outbox to the event log: a batch processor and an exporter, OpenTelemetry style.

- :class:`GrpcEventExporter` (the exporter, in :mod:`sidecar.events.exporter`) only encodes and
  sends: ``EventLog.Append`` and ``EventLog.ReadStream`` over one gRPC channel, turning a failed
  RPC into :class:`ExportError`.
- :class:`Shipper` (the processor) decides what and when: it takes batches of numbered events
  from the :class:`~sidecar.events.outbox.Outbox`, appends them, and prunes what the log
  acknowledged. It retries with exponential backoff and jitter (:class:`Backoff`, in
  :mod:`sidecar.events.backoff`) behind its own :class:`~sidecar.breaker.CircuitBreaker`, so an
  event log that is down costs one failed call per open period, not a hot loop.

Exactly once. Append is idempotent forever by ``event_id``: an event the log already has is
answered ``duplicate=True`` and counts as shipped. So every retry is harmless, including the
one after a crash between "the log stored it" and "the outbox deleted it". Events are deleted
from the outbox only after the log has acknowledged them.

Stream heads. Before a stream whose head the outbox does not know is shipped (first start, wiped
outbox, new instance name), the shipper reads the head from the log (``ReadStream``, a galloping
search: O(log n) calls) and hands it to :meth:`Outbox.rebase`, which numbers the waiting events
after it (:mod:`sidecar.events.rebase`).

Conflicts. ``FAILED_PRECONDITION`` (another event at our version, or our chain does not continue
the log's head) is logged loudly and counted (``sidecar_events_ship_failures_total{code=
"FAILED_PRECONDITION"}``). The shipper then re-reads the log's head, drops what the log already
has and renumbers the rest after it (:meth:`Outbox.rebase`); a conflict again right after that
backs off exponentially, so it never spins. An overloaded log (``RESOURCE_EXHAUSTED`` with a
``grpc-retry-pushback-ms`` hint, :mod:`sidecar.eventlog.admission`) is waited for at least as
long as it asks, counted from its answer and capped at ``backoff_max_ms``. Other refusals
(``INVALID_ARGUMENT``, ``UNAUTHENTICATED``, ``PERMISSION_DENIED``...) keep the events and back
off the same way: data is never dropped because the log said no.

Threading: :class:`Shipper` runs in its own daemon thread; :meth:`Shipper.step` is one unit of
work and is what unit tests drive with an injected clock and random generator. Nothing here runs
on the proxy's event loop, and the gRPC channel is a synchronous one owned by this thread.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from sidecar.breaker import CircuitBreaker, State
from sidecar.events.backoff import Backoff, BreakerLog, breaker_settings
from sidecar.events.exporter import (
    Acknowledgement,
    EventExporter,
    ExportError,
    GrpcEventExporter,
    hinted_delay_s,
)
from sidecar.events.outbox import Outbox
from sidecar.events.rebase import READ_PAGE_EVENTS, StreamHeads
from sidecar.events.rollback import RollbackGuard
from sidecar.events.settings import EventsSettings
from sidecar.loud import LoudLimiter
from sidecar.v1 import events_pb2

__all__ = [
    "READ_PAGE_EVENTS",
    "Acknowledgement",
    "Backoff",
    "EventExporter",
    "ExportError",
    "GrpcEventExporter",
    "Shipper",
    "ShipperStats",
]

_log = logging.getLogger("sidecar.events")

MIN_RETRY_S: Final = 0.01
"""Shortest wait the shipper schedules (guards against a zero-length busy loop)."""
CONFLICT_CODE: Final = "FAILED_PRECONDITION"
_CLOCK_EPSILON_S: Final = 1e-6  # a linger this close to its end is over (float clock sums)


@dataclass(frozen=True, slots=True)
class ShipperStats:
    """Counters of the shipper since start (exported at scrape time)."""

    shipped: int
    """Events the log acknowledged (stored now, or already: duplicates included)."""
    duplicates: int
    """Of ``shipped``: events the log already had (a retry after a lost answer or a crash)."""
    failures: dict[str, int]
    """Failed RPCs by gRPC status name."""
    rebases: int
    """Times a stream was (re)numbered after the log's head (head learned or conflict)."""
    breaker_state: State
    rollbacks: int = 0
    """Times the log's head was found behind (or off) what it had acknowledged."""


class Shipper:
    """The batch processor between the outbox and the event log; see the module docstring.

    ``clock`` (monotonic seconds) and ``rng`` are injectable so tests can drive :meth:`step`
    without sleeping.

    Example::

        shipper = Shipper(outbox, GrpcEventExporter("127.0.0.1:7070"), EventsSettings())
        shipper.start()            # its own thread
        writer = OutboxWriter(queue, outbox, batch_size=500, on_written=shipper.wake)
        ...
        shipper.stop(timeout_s=5.0)    # ships what it can within 5 s, then closes the exporter
    """

    def __init__(self, outbox: Outbox, exporter: EventExporter, settings: EventsSettings, *,
                 breaker: CircuitBreaker | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self._outbox = outbox
        self._exporter = exporter
        self._settings = settings
        self._clock = clock
        self._rng = rng or random.Random()
        self._backoff = Backoff.from_settings(settings)
        self._append_timeout_s = settings.append_timeout_ms / 1000
        self._flush_interval_s = settings.flush_interval_ms / 1000
        self.breaker = breaker or CircuitBreaker("eventlog", breaker_settings(settings),
                                                 clock=clock)
        self.breaker.add_listener(BreakerLog())
        self._not_before = float("-inf")
        self._linger_s = settings.linger_ms / 1000
        self._partial_since: float | None = None
        self.lingering = False
        """True while the last :meth:`step` is waiting for a partial batch to fill."""
        self.idle = False
        """True when the last :meth:`step` found nothing to ship."""
        self._failures_in_row = 0
        self._conflicts_in_row = 0
        self.rollback = RollbackGuard(outbox)
        """Checks the log's heads against what it acknowledged on each (re)connect."""
        self._heads = StreamHeads(outbox, exporter, self.rollback, self._timeout_s,
                                  self._count_rebase)
        self._deadline: float | None = None
        self._shipped = 0
        self._duplicates = 0
        self._rebases = 0
        self._failures: dict[str, int] = {}
        self._counter_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._unreachable = LoudLimiter(_log, "cannot ship breaker events to the event log",
                                        level=logging.WARNING)
        self._conflict = LoudLimiter(
            _log, "the event log refused breaker events as a conflict (FAILED_PRECONDITION): "
                  "re-reading the stream head and renumbering unshipped events; is another "
                  "sidecar writing the same stream (service/instance)?", interval_s=0.0)
        self._refused = LoudLimiter(_log, "the event log refused breaker events; they stay in "
                                          "the outbox and are retried with backoff")
        self._overloaded = LoudLimiter(_log, "the event log is overloaded (RESOURCE_EXHAUSTED): "
                                       "waiting as long as it asks; events stay in the outbox",
                                       level=logging.WARNING)
        self._broken = LoudLimiter(_log, "the event shipper failed unexpectedly; retrying")

    # --- what the exporter reports -------------------------------------------------------------

    def stats(self) -> ShipperStats:
        """A copy of the counters (safe from any thread)."""
        with self._counter_lock:
            return ShipperStats(self._shipped, self._duplicates, dict(self._failures),
                                self._rebases, self.breaker.state, self.rollback.rollbacks)

    # --- one unit of work ------------------------------------------------------------------------

    def _timeout_s(self) -> float:
        if self._deadline is None:
            return self._append_timeout_s
        return max(MIN_RETRY_S, min(self._append_timeout_s, self._deadline - self._clock()))

    def step(self) -> float:
        """Do at most one RPC's worth of work; return the seconds until the next step is due
        (0.0: at once). Never raises."""
        now = self._clock()
        if now < self._not_before:
            return self._not_before - now
        try:
            stream = self._heads.next_stream()
            batch = [] if stream is not None else self._outbox.next_batch(
                self._settings.batch_size)
        except Exception as exc:  # the outbox failed (disk): not the log's fault
            return self._internal_failure(exc, now)
        self.idle = stream is None and not batch
        if self.idle:
            return self._flush_interval_s
        linger = self._linger(batch, now)
        if linger > 0:
            return linger
        permit = self.breaker.try_acquire()
        if permit is None:
            wait = max(self.breaker.retry_after_s(), MIN_RETRY_S)
            self._not_before = now + wait
            return wait
        started = self._clock()
        try:
            if stream is not None:
                self._heads.check_then_resolve(stream)
            else:
                self._ship(batch)
        except ExportError as exc:
            self.breaker.record(permit, self._clock() - started, failed=exc.unhealthy)
            return self._export_failure(exc, batch, now)
        except Exception as exc:
            self.breaker.release(permit)
            return self._internal_failure(exc, now)
        self.breaker.record(permit, self._clock() - started, failed=False)
        self._failures_in_row = 0
        if stream is None:
            self._conflicts_in_row = 0
        return 0.0

    def _linger(self, batch: list[events_pb2.Event], now: float) -> float:
        """Seconds to wait for a partial batch to fill (OTel's schedule delay): a storm of
        transitions then costs a few large Appends, not one per event. 0: ship now."""
        if (not batch or len(batch) >= self._settings.batch_size or self._linger_s <= 0
                or self._deadline is not None):
            self._partial_since = None
            self.lingering = False
            return 0.0
        if self._partial_since is None:
            self._partial_since = now
        wait = self._partial_since + self._linger_s - now
        self.lingering = wait > _CLOCK_EPSILON_S
        if not self.lingering:
            self._partial_since = None
            return 0.0
        return wait

    def _ship(self, batch: list[events_pb2.Event]) -> None:
        acks = self._exporter.append(batch, self._timeout_s())
        sent = {event.event_id: event for event in batch}
        acked = [ack for ack in acks if ack.event_id in sent]
        elsewhere = [ack.event_id for ack in acked
                     if ack.version != sent[ack.event_id].version]
        for ack in acked:
            if ack.version != sent[ack.event_id].version:
                _log.warning("event %s was stored at version %d, not %d (stored earlier)",
                             ack.event_id, ack.version, sent[ack.event_id].version,
                             extra={"event": "ship_version_mismatch"})
        self._outbox.acknowledge([ack.event_id for ack in acked], elsewhere)
        duplicates = sum(1 for ack in acked if ack.duplicate)
        with self._counter_lock:
            self._shipped += len(acked)
            self._duplicates += duplicates
        if len(acked) != len(batch):
            _log.error("the event log acknowledged %d of %d events; the rest will be resent",
                       len(acked), len(batch), extra={"event": "ship_partial_ack"})

    # --- failures -------------------------------------------------------------------------------

    def _count_rebase(self) -> None:
        with self._counter_lock:
            self._rebases += 1

    def _count_failure(self, code: str) -> None:
        with self._counter_lock:
            self._failures[code] = self._failures.get(code, 0) + 1

    def _export_failure(self, exc: ExportError, batch: list[events_pb2.Event],
                        now: float) -> float:
        self._count_failure(exc.code)
        if exc.code == CONFLICT_CODE and batch:
            self._conflicts_in_row += 1
            streams = sorted({event.stream for event in batch})
            self._heads.mark(streams)
            self._conflict.hit(extra={"event": "ship_conflict", "streams": streams,
                                      "error": exc.message})
            # the first conflict is resolved at once; a conflict again right after backs off
            delay = self._backoff.delay_s(self._conflicts_in_row - 1, self._rng)
        else:
            self._failures_in_row += 1
            # an overloaded log answered: alive, the same log, not a restore from a backup
            overloaded = exc.code == "RESOURCE_EXHAUSTED" and exc.retry_after_s is not None
            if exc.unhealthy and not overloaded:  # the log may come back as an older copy
                self.rollback.mark_all()
            delay = self._backoff.delay_s(self._failures_in_row, self._rng)
            if exc.retry_after_s is not None:
                delay = hinted_delay_s(exc.retry_after_s, delay, self._backoff.max_s,
                                       self._backoff.jitter, self._rng)
            limiter = (self._overloaded if overloaded else
                       self._unreachable if exc.unhealthy else self._refused)
            limiter.hit(extra={"event": "ship_failed", "code": exc.code, "error": exc.message,
                               "retry_in_s": round(delay, 3)})
        if exc.retry_after_s is not None:  # gRFC A6: the hint counts from the answer
            now = self._clock()
        self._not_before = now + max(delay, MIN_RETRY_S if delay else 0.0)
        return max(0.0, self._not_before - now)

    def _internal_failure(self, exc: Exception, now: float) -> float:
        self._count_failure("INTERNAL_ERROR")
        self._failures_in_row += 1
        delay = max(self._backoff.delay_s(self._failures_in_row, self._rng), MIN_RETRY_S)
        self._broken.hit(extra={"event": "ship_failed", "error": repr(exc)})
        _log.debug("shipper failure", exc_info=exc)
        self._not_before = now + delay
        return delay

    # --- the thread -----------------------------------------------------------------------------

    def wake(self) -> None:
        """New events are in the outbox (called by the writer; never blocks)."""
        self._wake.set()

    def start(self) -> None:
        """Start the shipper thread (daemon)."""
        if self._thread is not None:
            raise RuntimeError("shipper already started")
        self._thread = threading.Thread(target=self._run, name="sidecar-event-shipper",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                delay = self.step()
                if delay > 0:  # new events do not cut a linger short: they join the batch
                    (self._stopping if self.lingering else self._wake).wait(delay)
            self._drain()
        finally:
            self._exporter.close()

    def _drain(self) -> None:
        """Ship what is left until the outbox is empty or the deadline passes. Does not wait
        out an open breaker or a long backoff: what is not shipped stays in the outbox."""
        deadline = self._deadline if self._deadline is not None else self._clock()
        while self._clock() < deadline:
            delay = self.step()
            if self.idle:
                return  # nothing left
            if delay > 0:
                if self._clock() + delay >= deadline:
                    return
                time.sleep(delay)

    def stop(self, timeout_s: float) -> bool:
        """Ship what can be shipped within ``timeout_s``, then stop the thread and close the
        exporter. Returns True when the thread ended in time (it is a daemon either way)."""
        self._deadline = self._clock() + max(0.0, timeout_s)
        self._stopping.set()
        self._wake.set()
        if self._thread is None:
            self._exporter.close()
            return True
        self._thread.join(max(0.0, timeout_s) + 1.0)
        return not self._thread.is_alive()
