"""Audit: walk the whole log and report the first place where it is not whole.

``verify(store)`` reads every event once in global order and checks, stopping at the first
break (the one with the lowest global position):

- global positions are 1, 2, 3, ... with no gap and no repeat, except the positions retention
  deleted: a missing position must lie at or below the highest retention anchor, and the events
  found plus the events the anchors stand for must add up to the head position;
- each stream's versions are 1, 2, 3, ... and each ``prev_hash`` is the previous event's hash
  (``GENESIS_HASH`` for version 1); a stream cut by retention starts after its anchor and its
  first kept event must link to the anchor's hash;
- each ``hash`` is ``sidecar.chain.hash_of`` the event: a change to event_id, stream, version,
  type, occurred_at, trace_id or payload shows here;
- each store seal (``record_hash``, when the adapter keeps one) matches, covering
  ``global_position`` and ``recorded_at_ns``;
- each event is well-formed and its filter columns (service, instance, upstream) equal its
  payload's.

Then it walks every stream again through ``read_stream`` (the stream index must give the same
chain) and checks the head position and the stream list. So one changed byte in any stored
field is found and named (stream, version, position).

Uses only the store port, so it works for every adapter. Blocking: none (async reads).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sidecar import chain
from sidecar.eventlog.event_protos import decode_payload, filter_columns
from sidecar.eventlog.port import (
    EventStore,
    RetentionAnchor,
    StoredEvent,
    StoreError,
    check_read_limit,
    deleted_events,
    validate_new_event,
)

DEFAULT_AUDIT_PAGE_EVENTS = 5000
"""Events read per page while auditing."""


@dataclass(frozen=True, slots=True)
class AuditBreak:
    """The first place the log is not whole."""

    stream: str
    version: int
    global_position: int
    event_id: str
    problem: str

    def __str__(self) -> str:
        return (
            f"stream {self.stream!r} version {self.version} at global position "
            f"{self.global_position} (event {self.event_id or '?'}): {self.problem}"
        )


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What ``verify`` checked, and the first break if any (``ok`` when there is none)."""

    events_checked: int
    streams_checked: int
    head_position: int
    first_break: AuditBreak | None = None
    sealed: bool = field(default=False)
    anchored_streams: int = 0
    """Streams whose oldest events retention deleted (their chains were proven from there)."""
    deleted_events: int = 0
    """Events retention deleted, as the anchors account for them."""

    @property
    def ok(self) -> bool:
        return self.first_break is None

    def summary(self) -> str:
        """One line for humans (the CLI prints it)."""
        if self.first_break is None:
            cut = (
                f" ({self.anchored_streams} from their retention anchors, "
                f"{self.deleted_events} events deleted by retention)"
                if self.anchored_streams
                else ""
            )
            return (
                f"ok: {self.events_checked} events in {self.streams_checked} streams{cut}, "
                f"head position {self.head_position}, chains whole"
            )
        return f"BROKEN: {self.first_break}"


@dataclass(slots=True)
class _StreamState:
    version: int = 0
    hash: bytes = chain.GENESIS_HASH

    @classmethod
    def start(cls, anchor: RetentionAnchor | None) -> _StreamState:
        """Where a stream's chain starts: genesis, or its retention anchor."""
        return cls() if anchor is None else cls(anchor.version, anchor.hash)


def _check_event(event: StoredEvent, previous: _StreamState, sealed: bool) -> str | None:
    """The problem with ``event`` given its stream's previous state, or None. Pure."""
    if event.version != previous.version + 1:
        return f"version {event.version} follows version {previous.version} in its stream"
    if event.prev_hash != previous.hash:
        return (
            f"prev_hash {event.prev_hash.hex()[:16]}... is not the hash of version "
            f"{previous.version} ({previous.hash.hex()[:16]}...)"
        )
    try:
        recomputed = chain.hash_of(event)
    except ValueError as exc:
        return f"cannot hash the event: {exc}"
    if recomputed != event.hash:
        return "hash does not match the event's content (a hashed field was changed)"
    if sealed or event.record_hash:
        expected_seal = chain.compute_record_hash(
            hash=event.hash,
            global_position=event.global_position,
            recorded_at_ns=event.recorded_at_ns,
        )
        if event.record_hash != expected_seal:
            return "store seal does not match (global_position or recorded_at was changed)"
    try:
        validate_new_event(event.as_new_event())
        payload = decode_payload(event.type, event.payload)
    except StoreError as exc:
        return f"malformed: {exc}"
    if payload is not None:
        columns = (event.service, event.instance, event.upstream)
        if columns != filter_columns(payload):
            return (
                f"filter columns (service, instance, upstream) {columns} differ from the "
                f"payload's {filter_columns(payload)}"
            )
    return None


async def verify(store: EventStore, *, page_events: int = DEFAULT_AUDIT_PAGE_EVENTS) -> AuditReport:
    """Audit the whole log (see the module docstring); never raises for a broken log."""
    check_read_limit(page_events, "page_events")
    head = await store.head_position()
    anchors = await store.anchors()
    deleted = deleted_events(anchors)
    deleted_up_to = max((anchor.global_position for anchor in anchors.values()), default=0)
    streams = {name: _StreamState.start(anchor) for name, anchor in anchors.items()}
    expected_position = 1
    sealed: bool | None = None
    checked = 0

    def report(event: StoredEvent | None, problem: str) -> AuditReport:
        where = (
            AuditBreak(event.stream, event.version, event.global_position, event.event_id, problem)
            if event is not None
            else AuditBreak("", 0, expected_position, "", problem)
        )
        return AuditReport(checked, len(streams), head, where, bool(sealed), len(anchors),
                           deleted)

    while page := await store.read_all(from_position=expected_position, limit=page_events):
        for event in page:
            gap_ends = event.global_position - 1
            if event.global_position < expected_position or (
                event.global_position > expected_position and gap_ends > deleted_up_to
            ):
                return report(
                    event,
                    f"global position {event.global_position} follows "
                    f"{expected_position - 1}: position {expected_position} is missing"
                    + (f" and no retention anchor reaches it (they end at {deleted_up_to})"
                       if anchors else ""),
                )
            if sealed is None:
                sealed = bool(event.record_hash)
            state = streams.setdefault(event.stream, _StreamState())
            problem = _check_event(event, state, sealed)
            if problem is not None:
                return report(event, problem)
            state.version, state.hash = event.version, event.hash
            expected_position = event.global_position + 1
            checked += 1

    if checked + deleted != head:
        accounted = f"{checked} events found" + (
            f" and {deleted} deleted by retention" if anchors else ""
        )
        return report(None, f"the head position is {head} but the log accounts for "
                            f"{checked + deleted} positions ({accounted})")
    listed = await store.streams()
    if sorted(streams) != listed:
        missing = sorted(set(streams) - set(listed)) or sorted(set(listed) - set(streams))
        return report(None, f"the stream list disagrees with the events about {missing}")
    for name, state in sorted(streams.items()):
        problem_event, problem = await _walk_stream(
            store, name, state, _StreamState.start(anchors.get(name)), page_events
        )
        if problem is not None:
            return report(problem_event, f"read by stream: {problem}")
    return AuditReport(checked, len(streams), head, None, bool(sealed), len(anchors), deleted)


async def _walk_stream(
    store: EventStore, stream: str, expected: _StreamState, start: _StreamState,
    page_events: int,
) -> tuple[StoredEvent | None, str | None]:
    """Re-walk one stream by version from its start (genesis or anchor); it must link up and
    end where the global walk ended."""
    previous = start
    last_position = 0
    last: StoredEvent | None = None
    while page := await store.read_stream(stream, previous.version + 1, page_events):
        for event in page:
            if event.version != previous.version + 1 or event.prev_hash != previous.hash:
                return event, f"version {event.version} does not link to {previous.version}"
            if event.global_position <= last_position:
                return event, "global positions do not increase with versions"
            previous.version, previous.hash = event.version, event.hash
            last_position = event.global_position
            last = event
    if (previous.version, previous.hash) != (expected.version, expected.hash):
        return last, (
            f"ends at version {previous.version}, but the global walk ended at version "
            f"{expected.version}"
        )
    return None, None
