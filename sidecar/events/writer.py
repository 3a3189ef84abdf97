"""The outbox writer thread: moves events from the in-memory queue into the SQLite outbox.

Off the data path: the breaker listener only enqueues
(:class:`~sidecar.events.producer.EventQueue`); this thread appends batches to the
:class:`~sidecar.events.outbox.Outbox` (one transaction, one fsync each) and wakes the shipper.
Re-exported by :mod:`sidecar.events.outbox`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from sidecar.events.producer import EventQueue
from sidecar.loud import LoudLimiter
from sidecar.v1 import events_pb2

if TYPE_CHECKING:
    from sidecar.events.outbox import Outbox

__all__ = ["DEFAULT_WRITER_POLL_S", "DEFAULT_WRITER_RETRY_S", "OutboxWriter"]

_log = logging.getLogger("sidecar.events")

DEFAULT_WRITER_POLL_S: Final = 0.25
"""How long the writer waits for an event before checking whether it was asked to stop."""
DEFAULT_WRITER_RETRY_S: Final = 1.0
"""After a failed outbox write (disk full, I/O error) the writer retries this much later."""


class OutboxWriter:
    """The writer thread: takes events from the :class:`EventQueue`, appends them to the outbox
    in batches (one transaction, one fsync each) and wakes the shipper.

    A failed disk write is logged loudly and retried every ``retry_s`` with the same batch;
    meanwhile the queue fills and then drops (counted): the data path never notices.
    Refusals because the outbox is full are logged loudly too (rate limited).

    Example::

        writer = OutboxWriter(queue, outbox, batch_size=500, on_written=shipper.wake)
        writer.start()
        ...
        writer.stop(timeout_s=2.0)     # writes what is queued, then returns
    """

    def __init__(self, queue: EventQueue, outbox: Outbox, *, batch_size: int,
                 on_written: Callable[[], None] = lambda: None,
                 poll_s: float = DEFAULT_WRITER_POLL_S,
                 retry_s: float = DEFAULT_WRITER_RETRY_S) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        self._queue = queue
        self._outbox = outbox
        self._batch_size = batch_size
        self._on_written = on_written
        self._poll_s = poll_s
        self._retry_s = retry_s
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._held: list[events_pb2.Event] = []
        self.lost_on_stop = 0
        self._full = LoudLimiter(
            _log, f"domain events dropped: the outbox {outbox.path} is full "
                  f"({outbox.max_events} unshipped events; is the event log reachable?)")
        self._failing = LoudLimiter(
            _log, f"cannot write breaker events to the outbox {outbox.path}")

    def write_once(self, timeout_s: float | None) -> int:
        """Move one batch from the queue into the outbox (waiting up to ``timeout_s`` for the
        first event). Returns how many were accepted. Raises ``sqlite3.Error`` on a failed
        write, keeping the batch for the next call."""
        if not self._held:
            self._held = self._queue.take(self._batch_size, timeout_s)
        if not self._held:
            return 0
        batch = self._held
        accepted = self._outbox.append(batch)
        self._held = []
        if accepted < len(batch):
            self._full.hit(len(batch) - accepted,
                           extra={"event": "events_dropped", "reason": "outbox_full",
                                  "outbox_max_events": self._outbox.max_events})
        if accepted:
            self._on_written()
        return accepted

    def start(self) -> None:
        """Start the writer thread (daemon: it never keeps the process alive)."""
        if self._thread is not None:
            raise RuntimeError("writer already started")
        self._thread = threading.Thread(target=self._run, name="sidecar-outbox-writer",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            stopping = self._stopping.is_set()
            try:
                written = self.write_once(0 if stopping else self._poll_s)
            except sqlite3.Error as exc:
                self._failing.hit(len(self._held), extra={"event": "outbox_error",
                                                          "error": str(exc)})
                if stopping:
                    self.lost_on_stop += len(self._held) + self._queue.depth()
                    _log.error("outbox writer stopping with %d unwritten events",
                               self.lost_on_stop, extra={"event": "outbox_error"})
                    return
                self._stopping.wait(self._retry_s)
                continue
            if stopping and not written and not self._held:
                return

    def stop(self, timeout_s: float) -> bool:
        """Ask the thread to write what is queued and end; wait up to ``timeout_s``.
        Returns True when it ended."""
        self._stopping.set()
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()
