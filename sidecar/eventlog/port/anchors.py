"""Retention anchors: what is left of a stream prefix that retention deleted.

Retention (``sidecar eventlog serve --retain-days/--retain-events-per-stream``) deletes the
oldest events of a stream, always a whole prefix (versions 1..N). What stays is the stream's
*anchor*: the version, hash and global position of the last deleted event. The anchor is why a
cut log can still be trusted:

- ``verify`` proves each stream's chain from its anchor (the first kept event must link to the
  anchor's hash), and that the positions it no longer finds are exactly the deleted ones (head =
  events kept + the anchors' versions summed);
- an append at or below the anchor is refused (:class:`BeforeAnchorError`, gRPC
  FAILED_PRECONDITION): the event ids of deleted events are gone, so without the anchor a
  retried old append could be stored twice;
- a stream whose every event was deleted still has a head (the anchor), so its next event
  chains on, and a sidecar reading the head does not mistake the cut for a rollback.

Rules every adapter keeps (checked by ``tests/contract/retention_contract.py``): a cut never
goes past the stream's head, never moves an anchor back, and deletes and anchors together
(SQLite: one transaction; JetStream: the anchor is written first and reads hide the events at
or below it until the purge is done). Global positions are never reused, so the head position
never goes down, even when the newest event of the log was deleted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sidecar.eventlog.port.errors import ChainError
from sidecar.eventlog.port.records import NewEvent

__all__ = ["BeforeAnchorError", "RetentionAnchor", "check_after_anchor", "deleted_events"]


@dataclass(frozen=True, slots=True)
class RetentionAnchor:
    """The last deleted event of ``stream``: the chain of what is kept starts after it.

    ``recorded_at_ns`` is that event's store time (how far back the stream's history now
    reaches); ``cut_at_ns`` is when the cut was made.
    """

    stream: str
    version: int
    hash: bytes
    global_position: int
    recorded_at_ns: int
    cut_at_ns: int

    def __post_init__(self) -> None:
        if self.version < 1:
            raise ValueError(f"version: an anchor is a deleted event, >= 1, got {self.version}")
        if self.global_position < self.version:
            raise ValueError(f"global_position: {self.global_position} is below the anchor's "
                             f"version {self.version} (a stream's versions take positions)")


class BeforeAnchorError(ChainError):
    """An append at or below a stream's retention anchor (gRPC FAILED_PRECONDITION)."""

    def __init__(self, event: NewEvent, anchor: RetentionAnchor) -> None:
        super().__init__(
            f"stream {event.stream!r}: event {event.event_id} at version {event.version} is "
            f"before the retention anchor (version {anchor.version}): versions 1 to "
            f"{anchor.version} were deleted by retention and cannot be appended again",
            stream=event.stream,
            version=event.version,
            event_id=event.event_id,
        )
        self.anchor = anchor


def check_after_anchor(event: NewEvent, anchor: RetentionAnchor | None) -> None:
    """Refuse ``event`` when retention already deleted its version (adapters call this for every
    event whose id they do not hold, before the version checks)."""
    if anchor is not None and event.version <= anchor.version:
        raise BeforeAnchorError(event, anchor)


def deleted_events(anchors: Mapping[str, RetentionAnchor]) -> int:
    """How many events retention deleted in all: each anchor stands for versions 1..version."""
    return sum(anchor.version for anchor in anchors.values())
