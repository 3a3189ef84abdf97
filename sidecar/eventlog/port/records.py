"""The records of the event store port: what is appended, what is stored, what a read asks for.

Frozen dataclasses, no I/O, safe from any thread. ``NewEvent`` is the producer's event,
``StoredEvent`` adds what the store assigned (``StoredEvent.of`` makes one from the other),
``EventFilter`` narrows ``read_all``/``follow`` and ``FollowBatch`` is one step of ``follow``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "NO_FILTER",
    "AppendOutcome",
    "EventFilter",
    "FollowBatch",
    "NewEvent",
    "StoredEvent",
]


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event as the producer made it (already validated by the server).

    ``payload`` is the typed payload message serialized with ``deterministic=True``;
    ``service``/``instance``/``upstream`` are filter columns copied from the payload
    ("" when the payload has none). ``hash`` = ``sidecar.chain.hash_of(self)``.
    """

    event_id: str
    stream: str
    version: int
    type: str
    occurred_at_ns: int
    trace_id: str
    payload: bytes
    prev_hash: bytes
    hash: bytes
    service: str = ""
    instance: str = ""
    upstream: str = ""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A ``NewEvent`` plus what the store assigned.

    ``record_hash`` = ``sidecar.chain.compute_record_hash(hash, global_position,
    recorded_at_ns)`` when the adapter keeps one (so ``verify`` also covers the store-assigned
    fields), else ``b""``.
    """

    event_id: str
    stream: str
    version: int
    type: str
    occurred_at_ns: int
    trace_id: str
    payload: bytes
    prev_hash: bytes
    hash: bytes
    service: str
    instance: str
    upstream: str
    global_position: int
    recorded_at_ns: int
    record_hash: bytes = b""

    @classmethod
    def of(
        cls,
        event: NewEvent,
        global_position: int,
        recorded_at_ns: int,
        record_hash: bytes = b"",
    ) -> StoredEvent:
        """``event`` as stored at ``global_position``: the one place a stored record is made from
        an appended one (both adapters use it, so neither can drop a field)."""
        return cls(
            event_id=event.event_id,
            stream=event.stream,
            version=event.version,
            type=event.type,
            occurred_at_ns=event.occurred_at_ns,
            trace_id=event.trace_id,
            payload=event.payload,
            prev_hash=event.prev_hash,
            hash=event.hash,
            service=event.service,
            instance=event.instance,
            upstream=event.upstream,
            global_position=global_position,
            recorded_at_ns=recorded_at_ns,
            record_hash=record_hash,
        )

    def values(self) -> tuple[object, ...]:
        """The fields in declaration order (a row of a table whose columns follow the fields)."""
        return tuple(getattr(self, name) for name in self.__dataclass_fields__)

    def as_new_event(self) -> NewEvent:
        """The producer's part of this event (what was appended)."""
        return NewEvent(
            event_id=self.event_id,
            stream=self.stream,
            version=self.version,
            type=self.type,
            occurred_at_ns=self.occurred_at_ns,
            trace_id=self.trace_id,
            payload=self.payload,
            prev_hash=self.prev_hash,
            hash=self.hash,
            service=self.service,
            instance=self.instance,
            upstream=self.upstream,
        )


@dataclass(frozen=True, slots=True)
class AppendOutcome:
    """Where one appended event lives; ``duplicate`` when it was already stored (nothing new)."""

    event_id: str
    global_position: int
    version: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Server-side filter for ``read_all``. Empty strings/tuples and 0 mean "any".

    The time range is on ``occurred_at_ns``: ``from_time_ns`` inclusive, ``to_time_ns``
    exclusive.
    """

    service: str = ""
    instance: str = ""
    upstream: str = ""
    types: tuple[str, ...] = ()
    from_time_ns: int = 0
    to_time_ns: int = 0

    def matches(self, event: StoredEvent | NewEvent) -> bool:
        """Whether ``event`` passes (adapters without server-side filtering can use this)."""
        return (
            (not self.service or event.service == self.service)
            and (not self.instance or event.instance == self.instance)
            and (not self.upstream or event.upstream == self.upstream)
            and (not self.types or event.type in self.types)
            and (not self.from_time_ns or event.occurred_at_ns >= self.from_time_ns)
            and (not self.to_time_ns or event.occurred_at_ns < self.to_time_ns)
        )


NO_FILTER = EventFilter()
"""The filter that passes every event (the default of ``read_all``)."""


@dataclass(frozen=True, slots=True)
class FollowBatch:
    """One step of ``EventStore.follow``.

    ``events`` pass the filter and follow each other by position; ``scanned_to`` is the next
    position to look at: every position below it was delivered (in this or an earlier batch)
    or did not pass the filter, so a follower that resumes there misses nothing and repeats
    nothing. ``head`` is the highest log head the store knew when it made the batch.
    ``live`` turns True once the catch-up reached the head; from then on batches come as
    events are appended, and an empty one (``events == ()``) means nothing came within the
    wait.
    """

    events: tuple[StoredEvent, ...]
    scanned_to: int
    head: int
    live: bool
