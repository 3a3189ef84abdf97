"""The errors of the event store port, and the rules both adapters raise them by.

Error tree::

    StoreError                  anything the store refuses or cannot do
    ├── InvalidEventError       a field is malformed (also a ValueError); names the field
    ├── ConflictError           a different event at an existing (stream, version), or a known
    │                           event_id with different content; names expected and actual
    └── ChainError              version skipped, prev_hash is not the stream head's hash, or hash
        │                       is not compute_hash of the event
        └── BeforeAnchorError   (``anchors``) at or below a stream's retention anchor

The rules are here, not in the adapters, so SQLite and JetStream refuse the same events with
the same words: ``check_chain`` (the event follows the stream head), ``check_same_content``
(an event id seen again carries the same content) and ``version_taken`` (the conflict when
another event holds the version).
"""

from __future__ import annotations

from sidecar import chain
from sidecar.eventlog.port.records import NewEvent

__all__ = [
    "ChainError",
    "ConflictError",
    "InvalidEventError",
    "StoreError",
    "check_chain",
    "check_same_content",
    "version_taken",
]


class StoreError(Exception):
    """The store refused an operation or could not perform it."""


class InvalidEventError(StoreError, ValueError):
    """A field of an appended event is malformed. ``field`` names it (gRPC INVALID_ARGUMENT)."""

    def __init__(self, field: str, problem: str, *, event_id: str = "") -> None:
        where = f"event {event_id}: " if event_id else ""
        super().__init__(f"{where}{field}: {problem}")
        self.field = field
        self.problem = problem
        self.event_id = event_id


class ConflictError(StoreError):
    """A different event is stored where this one claims to go (gRPC FAILED_PRECONDITION).

    ``expected``/``actual`` describe the clash in words, e.g. expected "stream head at
    version 4" and actual "head is version 7; version 5 holds event 0190...".
    """

    def __init__(
        self,
        message: str,
        *,
        stream: str,
        version: int,
        event_id: str,
        existing_event_id: str,
        expected: str,
        actual: str,
    ) -> None:
        super().__init__(message)
        self.stream = stream
        self.version = version
        self.event_id = event_id
        self.existing_event_id = existing_event_id
        self.expected = expected
        self.actual = actual


class ChainError(StoreError):
    """The hash chain or version sequence of a stream would break (gRPC FAILED_PRECONDITION)."""

    def __init__(self, message: str, *, stream: str, version: int, event_id: str) -> None:
        super().__init__(message)
        self.stream = stream
        self.version = version
        self.event_id = event_id



def check_same_content(original: NewEvent, again: NewEvent) -> None:
    """Idempotency forever: an event id seen again must carry the same content, else conflict."""
    if original != again:
        differing = [
            name
            for name in NewEvent.__dataclass_fields__
            if getattr(original, name) != getattr(again, name)
        ]
        raise ConflictError(
            f"event {again.event_id} is already stored (stream {original.stream!r} version "
            f"{original.version}) with different content: {', '.join(differing)} differ",
            stream=again.stream,
            version=again.version,
            event_id=again.event_id,
            existing_event_id=original.event_id,
            expected=f"the stored content of event {original.event_id}",
            actual=f"different {', '.join(differing)}",
        )


def version_taken(event: NewEvent, holder: str, head_version: int) -> ConflictError:
    """The conflict both adapters raise when another event already holds this version."""
    return ConflictError(
        f"stream {event.stream!r}: event {event.event_id} expects the head at version "
        f"{event.version - 1}, but the head is version {head_version} and version "
        f"{event.version} holds event {holder}",
        stream=event.stream,
        version=event.version,
        event_id=event.event_id,
        existing_event_id=holder,
        expected=f"head at version {event.version - 1}",
        actual=f"head at version {head_version}",
    )


def check_chain(event: NewEvent, head_version: int, head_hash: bytes) -> None:
    """Refuse ``event`` unless it follows the stream head ``(head_version, head_hash)``: the next
    version, ``prev_hash`` the head's hash, ``hash`` the event's own. Adapters call it for every
    new event after the duplicate, anchor and taken-version checks."""
    where = f"stream {event.stream!r} version {event.version}"
    if event.version != head_version + 1:
        raise ChainError(
            f"stream {event.stream!r}: event {event.event_id} has version {event.version} but "
            f"the next version is {head_version + 1} (gap)",
            stream=event.stream, version=event.version, event_id=event.event_id,
        )
    if event.prev_hash != head_hash:
        raise ChainError(
            f"{where}: prev_hash {event.prev_hash.hex()} is not the hash of version "
            f"{head_version} ({head_hash.hex()})",
            stream=event.stream, version=event.version, event_id=event.event_id,
        )
    if chain.hash_of(event) != event.hash:
        raise ChainError(
            f"{where}: hash {event.hash.hex()} is not the SHA-256 of the event's canonical bytes",
            stream=event.stream, version=event.version, event_id=event.event_id,
        )
