"""Rollback detection: the sidecar notices that the event log lost events it had acknowledged.

An event log restored from an older backup, or a JetStream stream that was recreated, cannot see
its own truncation: its chain is whole, ``verify`` passes, and a shipper that simply renumbered
its next events after the old head would bury the lost ones for good. But every sidecar knows the
last version and hash the log acknowledged for its own stream (the outbox keeps it, with the
newest ``outbox_keep_acked`` acknowledged events). So whenever the shipper (re)connects (first
start, after the log was unreachable) and before it adopts the log's head after a conflict, it
reads the log's head (:class:`RollbackGuard`):

- the head is behind the acknowledged version: ``head_behind``. The kept acknowledged events
  after the found head are put back into the outbox's pending set in their arrival order and
  renumbered after the found head, so when the log ends where they began they get the same
  versions and hashes as before, and the chain is whole again (Append is idempotent by
  ``event_id``, so nothing is stored twice). ``lost`` counts the acknowledged versions after the
  found head that the outbox no longer held.
- the head is at or past the acknowledged version but its hash there differs: ``hash_mismatch``
  (another writer's events sit at those versions). Nothing is re-shipped: re-shipping would fork
  the chain or conflict forever. The log's head is adopted as the acknowledged head, so the
  next check does not fire again (no loop); the kept events stay in the outbox for an operator.

Either way one ERROR line names the stream, the acknowledged and the found versions, the rollback
is counted (``sidecar_eventlog_rollbacks_total``) and a ``LogRollbackDetected`` event goes through
the outbox, after the re-shipped ones.

Threading: used by the shipper thread only; its methods block on the outbox and on the RPCs of
the callables they are given.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from sidecar.events.outbox import Outbox, StreamHead
from sidecar.ids import uuid7
from sidecar.v1 import events_pb2

__all__ = ["REASON_HASH_MISMATCH", "REASON_HEAD_BEHIND", "Rollback", "RollbackGuard",
           "classify"]

_log = logging.getLogger("sidecar.events")

REASON_HEAD_BEHIND: Final = "head_behind"
REASON_HASH_MISMATCH: Final = "hash_mismatch"
TYPE_LOG_ROLLBACK_DETECTED: Final = "LogRollbackDetected"


@dataclass(frozen=True, slots=True)
class Rollback:
    """One detected rollback of a stream and what was done about it."""

    stream: str
    acknowledged: StreamHead
    found: StreamHead
    reason: str
    reshipped: int
    lost: int


def classify(acknowledged: StreamHead | None, found: StreamHead,
             hash_at_acknowledged: bytes | None) -> str | None:
    """The rollback reason, or None when the log still has what it acknowledged.

    ``hash_at_acknowledged`` is the hash of the log's event at ``acknowledged.version`` (None when
    the log has no event there).

    >>> classify(StreamHead(5, b"a"), StreamHead(3, b"c"), None)
    'head_behind'
    >>> classify(StreamHead(5, b"a"), StreamHead(9, b"z"), b"b")
    'hash_mismatch'
    >>> classify(StreamHead(5, b"a"), StreamHead(9, b"z"), b"a") is None
    True
    """
    if acknowledged is None or acknowledged.version == 0:
        return None
    if found.version < acknowledged.version:
        return REASON_HEAD_BEHIND
    if hash_at_acknowledged != acknowledged.hash:
        return REASON_HASH_MISMATCH
    return None


class RollbackGuard:
    """Which streams still need a head check, the check itself and the repair.

    ``mark_all`` is called at start and after the log was unreachable; the shipper then calls
    :meth:`check` for each stream of :meth:`next_stream` (one RPC's worth of work at a time).

    Example::

        guard = RollbackGuard(outbox)
        stream = guard.next_stream()
        if stream is not None:
            rollback = guard.check(stream, read_head, event_at)
    """

    def __init__(self, outbox: Outbox, *, ids: Callable[[], str] = uuid7,
                 wall_clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._outbox = outbox
        self._ids = ids
        self._wall_clock_ns = wall_clock_ns
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._rollbacks = 0
        self.mark_all()

    @property
    def rollbacks(self) -> int:
        """Rollbacks detected since start (``sidecar_eventlog_rollbacks_total``)."""
        with self._lock:
            return self._rollbacks

    def mark_all(self) -> None:
        """(Re)connect: every stream the log has acknowledged events of gets checked again."""
        self._pending = set(self._outbox.acknowledged_streams())

    def next_stream(self) -> str | None:
        """A stream still to be checked, or None."""
        return min(self._pending) if self._pending else None

    def check(self, stream: str, read_head: Callable[[str], StreamHead],
              event_at: Callable[[str, int], events_pb2.Event | None]) -> Rollback | None:
        """Compare the log's head of ``stream`` with what it acknowledged; repair a rollback.

        Raises what ``read_head``/``event_at`` raise (the stream stays marked then)."""
        acknowledged = self._outbox.acknowledged_head(stream)
        if acknowledged is None:
            self._pending.discard(stream)
            return None
        found = read_head(stream)
        hash_at: bytes | None = None
        if found.version == acknowledged.version:
            hash_at = found.hash
        elif found.version > acknowledged.version:
            event = event_at(stream, acknowledged.version)
            # Absent below a head past it: retention deleted it (a stream's versions have no
            # holes otherwise), so what was acknowledged was kept until the cut.
            hash_at = acknowledged.hash if event is None else bytes(event.hash)
        reason = classify(acknowledged, found, hash_at)
        self._pending.discard(stream)
        if reason is None:
            return None
        if reason == REASON_HEAD_BEHIND:
            held = len(self._outbox.acknowledged_events(stream, found.version))
            reshipped = self._outbox.requeue_acked(stream, found.version, found)
            lost = max(0, acknowledged.version - found.version - held)
        else:
            reshipped = self._outbox.requeue_acked(stream, acknowledged.version, found)
            lost = 0
        rollback = Rollback(stream, acknowledged, found, reason, reshipped, lost)
        self._report(rollback)
        return rollback

    def _report(self, rollback: Rollback) -> None:
        with self._lock:
            self._rollbacks += 1
        _log.error(
            "event log rollback on stream %s: it had acknowledged version %d, now its head is "
            "version %d (%s); re-shipping %d events, %d no longer held", rollback.stream,
            rollback.acknowledged.version, rollback.found.version, rollback.reason,
            rollback.reshipped, rollback.lost,
            extra={"event": "eventlog_rollback", "stream": rollback.stream,
                   "acknowledged_version": rollback.acknowledged.version,
                   "found_version": rollback.found.version, "reason": rollback.reason,
                   "reshipped": rollback.reshipped, "lost": rollback.lost})
        service, _, instance = rollback.stream.partition("/")
        event = events_pb2.Event(event_id=self._ids(), stream=rollback.stream,
                                 type=TYPE_LOG_ROLLBACK_DETECTED)
        event.occurred_at.FromNanoseconds(self._wall_clock_ns())
        payload = event.log_rollback_detected
        payload.service = service
        payload.instance = instance or service
        payload.stream = rollback.stream
        payload.acknowledged_version = rollback.acknowledged.version
        payload.found_version = rollback.found.version
        payload.reshipped = rollback.reshipped
        payload.reason = rollback.reason
        payload.lost = rollback.lost
        self._outbox.append([event])
