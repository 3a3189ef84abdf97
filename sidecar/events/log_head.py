"""Where the event log's chain of a stream ends, found with ReadStream alone.

The shipper asks this when it (re)connects and before it adopts the log's head after a
conflict (:mod:`sidecar.events.rollback` compares the answer with what the log acknowledged).
Only the exporter's calls are used, so it works against any event log version.
"""

from __future__ import annotations

from sidecar.events.exporter import EventExporter
from sidecar.events.outbox import GENESIS_HEAD, StreamHead
from sidecar.v1 import events_pb2


def event_at(exporter: EventExporter, stream: str, version: int,
             timeout_s: float) -> events_pb2.Event | None:
    """The log's event at ``version`` of ``stream``, or None when it has none there."""
    page = exporter.read_stream(stream, version, 1, timeout_s)
    if page and int(page[0].version) == version:
        return page[0]
    return None


def read_log_head(exporter: EventExporter, stream: str, known: StreamHead | None,
                  timeout_s: float) -> StreamHead:
    """The log's last event of ``stream``: gallop up from ``known`` (the outbox's idea of the
    head), then binary search. About 2*log2(distance) ReadStream calls; 3 when the guess is
    right.

    The search starts at the stream's retention anchor (asked first): versions up to it were
    deleted on purpose, and a stream cut whole has the anchor as its head, not genesis (else a
    quiet sidecar would take retention for a rollback)."""
    anchor_version, anchor_hash = exporter.stream_anchor(stream, timeout_s)
    probe = max(1, anchor_version + 1, known.version if known is not None else 1)
    low, low_event = anchor_version, None
    high: int
    found = event_at(exporter, stream, probe, timeout_s)
    if found is None:
        high = probe
    else:
        low, low_event, step = probe, found, 1
        while True:
            candidate = event_at(exporter, stream, low + step, timeout_s)
            if candidate is None:
                high = low + step
                break
            low, low_event, step = low + step, candidate, step * 2
    while high - low > 1:
        middle = (low + high) // 2
        found = event_at(exporter, stream, middle, timeout_s)
        if found is None:
            high = middle
        else:
            low, low_event = middle, found
    if low_event is None:
        return StreamHead(anchor_version, anchor_hash) if anchor_version else GENESIS_HEAD
    return StreamHead(low, bytes(low_event.hash))
