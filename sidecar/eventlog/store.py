"""The event store port: records, errors and the abstract ``EventStore`` every adapter implements.

Adapters: ``sqlite_store.SqliteEventStore`` (embedded default) and the ``nats`` package (JetStream).
``stores.open_store(url)`` picks one by URL. One contract test suite
(``tests/contract/store_contract.py``) runs against every adapter.

Error tree::

    StoreError                  anything the store refuses or cannot do
    ├── InvalidEventError       a field is malformed (also a ValueError); names the field
    ├── ConflictError           a different event at an existing (stream, version), or a known
    │                           event_id with different content; names expected and actual
    └── ChainError              version skipped, prev_hash is not the stream head's hash, or hash
                                is not compute_hash of the event

Threading: every method is a coroutine for one event loop; adapters own their threads and
connections and never block the loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sidecar.eventlog.anchors import RetentionAnchor

MAX_READ_LIMIT = 10_000
"""Largest ``limit`` a read accepts; adapters raise ``ValueError`` above it or below 1."""

DEFAULT_READ_LIMIT = 1000

DEFAULT_FOLLOW_WAIT_S = 1.0
"""How long ``follow`` waits for an append before it yields an empty batch (a sign of life
carrying the head it knows)."""


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


class EventStore(ABC):
    """Append-only, idempotent, hash-chained event storage.

    Contract (checked by ``tests/contract/store_contract.py``):

    - ``append`` stores a batch atomically (all events or none) and answers only after the
      batch is durable. An ``event_id`` seen before (ever) with identical content returns the
      original position with ``duplicate=True`` and stores nothing; with different content it
      is a ``ConflictError``. A new event must have ``version == head + 1`` of its stream,
      ``prev_hash`` == the head's hash (``GENESIS_HASH`` for version 1) and
      ``hash == hash_of(event)``, else ``ChainError`` (or ``ConflictError`` when the version is
      already taken by another event).
    - Global positions are 1, 2, 3, ... without gaps, in commit order, until retention
      deletes a prefix of a stream (``cut``): then the deleted positions are missing from
      reads, are never given again, and the head position never goes down.
    - Reads return events in order; ``limit`` is 1..``MAX_READ_LIMIT``.
    - Retention (``sidecar.eventlog.anchors``): ``cut`` deletes a stream's oldest versions and
      leaves an anchor; an append at or below it raises ``BeforeAnchorError``; a stream whose
      events were all deleted is still listed by ``streams`` and chains on from its anchor.
    """

    @abstractmethod
    async def append(self, events: Sequence[NewEvent]) -> list[AppendOutcome]:
        """Store one atomic batch; one outcome per input event, in input order."""

    @abstractmethod
    async def read_stream(
        self, stream: str, from_version: int = 1, limit: int = DEFAULT_READ_LIMIT
    ) -> list[StoredEvent]:
        """Events of ``stream`` with ``version >= from_version``, by version."""

    @abstractmethod
    async def read_all(
        self,
        from_position: int = 1,
        limit: int = DEFAULT_READ_LIMIT,
        filter: EventFilter = NO_FILTER,
    ) -> list[StoredEvent]:
        """Events with ``global_position >= from_position`` passing ``filter``, by position.

        Page on with ``from_position = last.global_position + 1``.
        """

    @abstractmethod
    async def head_position(self) -> int:
        """The last committed global position (0 when empty)."""

    @abstractmethod
    async def streams(self) -> list[str]:
        """Names of all streams, sorted."""

    @abstractmethod
    async def anchors(self) -> dict[str, RetentionAnchor]:
        """Every stream's retention anchor, by stream (streams never cut have none)."""

    async def stream_head(self, stream: str) -> tuple[int, bytes]:
        """``stream``'s last version and hash (its anchor's when retention deleted every event;
        ``(0, b"")`` for a stream never written). Default: a search with ``read_stream``
        (``sidecar.eventlog.heads``); adapters that know their heads answer at once."""
        from sidecar.eventlog.heads import stream_head

        head = await stream_head(self, stream, await self.anchor(stream))
        return head.version, head.hash

    async def anchor(self, stream: str) -> RetentionAnchor | None:
        """``stream``'s retention anchor, or None (adapters answer it without reading all)."""
        return (await self.anchors()).get(stream)

    @abstractmethod
    async def cut(self, stream: str, through_version: int, cut_at_ns: int) -> RetentionAnchor:
        """Delete versions 1..``through_version`` of ``stream`` and anchor it there, at once.

        Returns the anchor in force afterwards. A ``through_version`` at or below the current
        anchor deletes nothing (the anchor never moves back); one above the stream's head, or
        below 1, is a ``ValueError``. Raises ``StoreError`` when this store cannot delete (e.g.
        a JetStream stream created to deny purges)."""

    @abstractmethod
    async def load_checkpoint(self, name: str) -> tuple[int, bytes] | None:
        """A projection's saved (position, state snapshot), or None."""

    @abstractmethod
    async def save_checkpoint(self, name: str, position: int, state: bytes) -> None:
        """Durably replace a projection's checkpoint; position and state change together."""

    @abstractmethod
    async def wait_for_append(self, after_position: int, timeout_s: float) -> int:
        """The head as soon as it is > ``after_position``, else the head after ``timeout_s``."""

    async def follow(
        self,
        from_position: int,
        filter: EventFilter = NO_FILTER,
        *,
        page_events: int = DEFAULT_READ_LIMIT,
        wait_s: float = DEFAULT_FOLLOW_WAIT_S,
    ) -> AsyncGenerator[FollowBatch, None]:
        """Every event from ``from_position`` on that passes ``filter``, catch-up then live,
        in position order, each exactly once, as batches of at most ``page_events``.

        Never ends by itself (close it: ``contextlib.aclosing``); a store failure raises.
        Reads ahead by at most one batch: a follower that stops pulling leaves the backlog in
        the store. Default: ``read_all`` pages up to the head, then ``wait_for_append`` and
        more pages (one cursor, so the switch to live can neither skip nor repeat an event).
        Adapters with a native feed override it (JetStream: an ordered consumer).
        """
        if from_position < 1:
            raise ValueError(f"from_position: must be >= 1, got {from_position}")
        cursor = from_position
        async for batch in read_until_head(self, from_position, filter, page_events):
            cursor = batch.scanned_to
            yield batch
        while True:
            head = await self.wait_for_append(cursor - 1, wait_s)
            if head < cursor:
                yield FollowBatch((), cursor, head, True)
                continue
            while cursor <= head:
                page = await self.read_all(cursor, page_events, filter)
                cursor = _next_cursor(cursor, page, page_events, head)
                yield FollowBatch(tuple(page), cursor, max(head, cursor - 1), True)

    @abstractmethod
    async def close(self) -> None:
        """Release threads and connections; idempotent."""


def _next_cursor(cursor: int, page: list[StoredEvent], limit: int, head: int) -> int:
    """Where a scan goes on after reading ``page`` (``limit`` asked) from ``cursor``, with
    ``head`` read before the page: a short page scanned everything up to ``head``."""
    after = page[-1].global_position + 1 if page else cursor
    return max(after, head + 1, cursor) if len(page) < limit else after


async def read_until_head(
    store: EventStore, from_position: int, filter: EventFilter, page_events: int
) -> AsyncGenerator[FollowBatch, None]:
    """The catch-up part of ``EventStore.follow``: ``read_all`` pages from ``from_position``
    until a page comes back short of the head read before it; that last batch has
    ``live=True`` (also when there was nothing to read)."""
    cursor = from_position
    while True:
        head = await store.head_position()
        if cursor > head:
            yield FollowBatch((), cursor, head, True)
            return
        page = await store.read_all(cursor, page_events, filter)
        cursor = _next_cursor(cursor, page, page_events, head)
        live = cursor > head
        yield FollowBatch(tuple(page), cursor, max(head, cursor - 1), live)
        if live:
            return


def check_read_limit(limit: int) -> None:
    """Adapters call this first in every read: limits outside 1..MAX_READ_LIMIT are a bug."""
    if not 1 <= limit <= MAX_READ_LIMIT:
        raise ValueError(f"limit: must be 1..{MAX_READ_LIMIT}, got {limit}")


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
