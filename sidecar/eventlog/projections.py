"""Projections (read models) of the breaker event log, and the runner that keeps them current.

Each projection is a pure fold: ``apply(state, event, payload)`` changes ``state`` for one
stored event (``payload`` is the event's decoded message, decoded once by the runner for all
projections) and does no I/O. States serialize to JSON with sorted keys, so a rebuilt state and
an incrementally kept one can be compared byte for byte.

The projections, all keyed per breaker ``(service, instance, upstream)``:

- ``breaker_status``: current state, since when, mode, last transition time; ConfigApplied
  makes an instance's configured upstreams known, and on ``source="start"`` resets them to
  CLOSED (a restarted sidecar's breakers start CLOSED) and forgets upstreams no longer listed.
- ``breaker_transitions``: transition counts by (from, to).
- ``breaker_open_time``: nanoseconds spent OPEN over completed periods plus the start of the
  current open period, so "seconds open at time t" includes the period still running.
- ``breaker_recovery``: time to recover = from leaving CLOSED for OPEN until CLOSED again
  (through any HALF_OPEN/OPEN cycles); sum and count give the mean time to recover.

Per (service, upstream) answers (instances open out of known, totals, MTTR) are aggregated at
query time by :class:`~sidecar.eventlog.breaker_views.BreakerViews` from the per-instance
states, so they can never drift apart.

A state or mode the proto does not define (stored before Append checked enums, or by a newer
producer) is folded as ``UNKNOWN(99)``: shown, never an error; such a state is neither OPEN nor
HALF_OPEN for the per-upstream answers. The endpoint projection lives in
:mod:`sidecar.eventlog.endpoint_projections`.

``ProjectionRunner`` folds the log from each projection's checkpoint, saves a checkpoint
(position and state together, atomically, via ``EventStore.save_checkpoint``) every
``snapshot_every_events`` events, reports its lag, and ``rebuild`` starts from nothing.

Threading: the runner is a coroutine-driven object for one event loop; ``catch_up`` is
serialized by a lock. Folding is CPU work on the loop, in pages of ``page_events`` events.

Example::

    runner = ProjectionRunner(store)
    await runner.load()                 # resume from checkpoints
    await runner.catch_up()             # fold up to the head
    views = runner.views()
    views.upstreams(now_ns=time.time_ns(), service="checkout")
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, TypeVar

from sidecar.eventlog.enums import unknown_label
from sidecar.eventlog.records import Payload, decode_payload
from sidecar.eventlog.store import MAX_READ_LIMIT, EventStore, StoredEvent, StoreError
from sidecar.v1 import events_pb2

if TYPE_CHECKING:
    from sidecar.eventlog.breaker_views import BreakerViews
    from sidecar.eventlog.retention_base import RetentionStart

DEFAULT_SNAPSHOT_EVERY_EVENTS: Final = 1000
"""Events folded between two checkpoints of a projection."""
DEFAULT_PROJECTION_PAGE_EVENTS: Final = 5000
"""Events read from the store per page while folding."""
STATE_FORMAT: Final = 1
"""Version of the serialized state layout; a checkpoint of another format is rebuilt."""

CLOSED: Final = "CLOSED"
OPEN: Final = "OPEN"
HALF_OPEN: Final = "HALF_OPEN"

_STATE_NAMES: Final = {
    value: name.removeprefix("BREAKER_STATE_") for name, value in events_pb2.BreakerState.items()
}
_MODE_NAMES: Final = {
    value: name.removeprefix("BREAKER_MODE_").lower()
    for name, value in events_pb2.BreakerMode.items()
}


def state_name(value: int) -> str:
    """``CLOSED``, ``OPEN``, ... or ``UNKNOWN(99)`` for a value this build has no name for."""
    return _STATE_NAMES.get(value) or unknown_label(value)


def mode_name(value: int) -> str:
    """``enforce``, ``metrics_only``, ... or ``UNKNOWN(99)``."""
    return _MODE_NAMES.get(value) or unknown_label(value)


Key = tuple[str, ...]
E = TypeVar("E")


# --- the projection base ------------------------------------------------------------------


class Projection(ABC, Generic[E]):
    """A named fold over the log into ``dict[Key, E]`` where ``E`` is a small dataclass."""

    name: ClassVar[str]
    entry_type: ClassVar[type[Any]]

    def initial(self) -> dict[Key, E]:
        return {}

    @abstractmethod
    def apply(self, state: dict[Key, E], event: StoredEvent, payload: Payload | None) -> None:
        """Fold one event into ``state`` (pure: no I/O, no clock)."""

    def dump(self, state: dict[Key, E]) -> bytes:
        """Canonical JSON (sorted keys, sorted entries) of ``state``."""
        entries = [[list(key), _fields(state[key])] for key in sorted(state)]
        document = {"format": STATE_FORMAT, "projection": self.name, "entries": entries}
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()

    def load(self, data: bytes) -> dict[Key, E]:
        """The state ``dump`` wrote; ``ValueError`` for another projection or format."""
        document = json.loads(data)
        if document.get("format") != STATE_FORMAT or document.get("projection") != self.name:
            raise ValueError(
                f"checkpoint of {self.name}: format {document.get('format')!r} of "
                f"{document.get('projection')!r} is not format {STATE_FORMAT} of {self.name!r}"
            )
        return {tuple(key): self.entry_type(**fields) for key, fields in document["entries"]}


def _fields(entry: Any) -> dict[str, Any]:
    fields: dict[str, Any] = dataclasses.asdict(entry)
    return fields


def _breaker_key(payload: events_pb2.BreakerTransitioned | events_pb2.BreakerModeChanged) -> Key:
    return (payload.service, payload.instance, payload.upstream)


def _instance_keys(state: dict[Key, Any], service: str, instance: str) -> list[Key]:
    return [key for key in state if key[0] == service and key[1] == instance]


# --- breaker_status -----------------------------------------------------------------------


@dataclass(slots=True)
class StatusEntry:
    state: str = CLOSED
    since_ns: int = 0
    mode: str = ""
    last_transition_at_ns: int = 0
    last_position: int = 0


class BreakerStatusProjection(Projection[StatusEntry]):
    """Current state of each breaker (see the module docstring for ConfigApplied)."""

    name = "breaker_status"
    entry_type = StatusEntry

    def apply(
        self, state: dict[Key, StatusEntry], event: StoredEvent, payload: Payload | None
    ) -> None:
        at_ns, position = event.occurred_at_ns, event.global_position
        if isinstance(payload, events_pb2.BreakerTransitioned):
            entry = state.setdefault(_breaker_key(payload), StatusEntry(since_ns=at_ns))
            entry.state = state_name(payload.to_state)
            entry.since_ns = entry.last_transition_at_ns = at_ns
            if payload.mode:
                entry.mode = mode_name(payload.mode)
            entry.last_position = position
        elif isinstance(payload, events_pb2.BreakerModeChanged):
            entry = state.setdefault(_breaker_key(payload), StatusEntry(since_ns=at_ns))
            entry.mode = mode_name(payload.to_mode)
            entry.last_position = position
        elif isinstance(payload, events_pb2.ConfigApplied):
            listed = set(payload.upstreams)
            for key in _instance_keys(state, payload.service, payload.instance):
                if key[2] not in listed:
                    del state[key]
            for upstream in sorted(listed):
                key = (payload.service, payload.instance, upstream)
                entry = state.setdefault(key, StatusEntry(since_ns=at_ns))
                if payload.source == "start" and entry.state != CLOSED:
                    entry.state, entry.since_ns = CLOSED, at_ns
                entry.last_position = position


# --- breaker_transitions ------------------------------------------------------------------


@dataclass(slots=True)
class CountEntry:
    count: int = 0


class TransitionCountsProjection(Projection[CountEntry]):
    """Transition counts keyed (service, instance, upstream, from_state, to_state)."""

    name = "breaker_transitions"
    entry_type = CountEntry

    def apply(
        self, state: dict[Key, CountEntry], event: StoredEvent, payload: Payload | None
    ) -> None:
        if isinstance(payload, events_pb2.BreakerTransitioned):
            key = (
                *_breaker_key(payload),
                state_name(payload.from_state),
                state_name(payload.to_state),
            )
            entry = state.get(key)
            if entry is None:
                state[key] = entry = CountEntry()
            entry.count += 1


# --- breaker_open_time --------------------------------------------------------------------


@dataclass(slots=True)
class OpenTimeEntry:
    open_ns_total: int = 0
    is_open: bool = False
    open_since_ns: int = 0

    def close_period(self, at_ns: int) -> None:
        if self.is_open:
            self.open_ns_total += max(0, at_ns - self.open_since_ns)
            self.is_open, self.open_since_ns = False, 0

    def open_ns_at(self, now_ns: int) -> int:
        """Time spent OPEN up to ``now_ns``, the current open period included."""
        running = max(0, now_ns - self.open_since_ns) if self.is_open else 0
        return self.open_ns_total + running


class OpenTimeProjection(Projection[OpenTimeEntry]):
    """Nanoseconds each breaker spent OPEN (by the producer's clock)."""

    name = "breaker_open_time"
    entry_type = OpenTimeEntry

    def apply(
        self, state: dict[Key, OpenTimeEntry], event: StoredEvent, payload: Payload | None
    ) -> None:
        at_ns = event.occurred_at_ns
        if isinstance(payload, events_pb2.BreakerTransitioned):
            entry = state.setdefault(_breaker_key(payload), OpenTimeEntry())
            if payload.to_state == events_pb2.BREAKER_STATE_OPEN:
                if not entry.is_open:
                    entry.is_open, entry.open_since_ns = True, at_ns
            else:
                entry.close_period(at_ns)
        elif isinstance(payload, events_pb2.ConfigApplied):
            listed = set(payload.upstreams)
            for key in _instance_keys(state, payload.service, payload.instance):
                if payload.source == "start" or key[2] not in listed:
                    state[key].close_period(at_ns)


# --- breaker_recovery ---------------------------------------------------------------------


@dataclass(slots=True)
class RecoveryEntry:
    recoveries: int = 0
    recovery_ns_total: int = 0
    in_incident: bool = False
    incident_start_ns: int = 0


class RecoveryProjection(Projection[RecoveryEntry]):
    """Completed recoveries (OPEN ... -> CLOSED) and their total duration, per breaker."""

    name = "breaker_recovery"
    entry_type = RecoveryEntry

    def apply(
        self, state: dict[Key, RecoveryEntry], event: StoredEvent, payload: Payload | None
    ) -> None:
        at_ns = event.occurred_at_ns
        if isinstance(payload, events_pb2.BreakerTransitioned):
            entry = state.setdefault(_breaker_key(payload), RecoveryEntry())
            if payload.to_state == events_pb2.BREAKER_STATE_OPEN and not entry.in_incident:
                entry.in_incident, entry.incident_start_ns = True, at_ns
            elif payload.to_state == events_pb2.BREAKER_STATE_CLOSED and entry.in_incident:
                entry.recoveries += 1
                entry.recovery_ns_total += max(0, at_ns - entry.incident_start_ns)
                entry.in_incident, entry.incident_start_ns = False, 0
        elif isinstance(payload, events_pb2.ConfigApplied):
            listed = set(payload.upstreams)
            for key in _instance_keys(state, payload.service, payload.instance):
                if payload.source == "start" or key[2] not in listed:
                    # The breaker was reset or removed, not recovered: no sample.
                    state[key].in_incident, state[key].incident_start_ns = False, 0


def default_projections() -> list[Projection[Any]]:
    """Fresh instances of every breaker projection."""
    return [
        BreakerStatusProjection(),
        TransitionCountsProjection(),
        OpenTimeProjection(),
        RecoveryProjection(),
    ]


# --- the runner ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Slot:
    projection: Projection[Any]
    state: dict[Key, Any]
    position: int = 0
    unsaved_events: int = 0


class ProjectionRunner:
    """Keeps a set of projections current from an ``EventStore``.

    Each projection has its own checkpoint (position + state, saved together) under its name,
    so they may resume from different positions after a crash between two saves; the runner
    reads from the lowest and gives each projection only the events past its own position.
    """

    def __init__(
        self,
        store: EventStore,
        projections: Sequence[Projection[Any]] | None = None,
        *,
        snapshot_every_events: int = DEFAULT_SNAPSHOT_EVERY_EVENTS,
        page_events: int = DEFAULT_PROJECTION_PAGE_EVENTS,
    ) -> None:
        if snapshot_every_events < 1:
            raise ValueError(f"snapshot_every_events: must be >= 1, got {snapshot_every_events}")
        if not 1 <= page_events <= MAX_READ_LIMIT:
            raise ValueError(f"page_events: must be 1..{MAX_READ_LIMIT}, got {page_events}")
        self._store = store
        chosen = list(projections) if projections is not None else default_projections()
        names = [p.name for p in chosen]
        if len(set(names)) != len(names):
            raise ValueError(f"projections: names must be unique, got {names}")
        self._slots = [_Slot(p, p.initial()) for p in chosen]
        self._snapshot_every_events = snapshot_every_events
        self._page_events = page_events
        self._lock = asyncio.Lock()
        self.events_folded = 0
        """Events folded by this runner since it was made (for rates and metrics)."""
        self.started_from: RetentionStart | None = None
        """Set by ``rebuild`` on a log cut by retention: the snapshots it started from."""

    @property
    def position(self) -> int:
        """The global position every projection has folded up to (the lowest of them)."""
        return min((slot.position for slot in self._slots), default=0)

    def positions(self) -> dict[str, int]:
        return {slot.projection.name: slot.position for slot in self._slots}

    def state(self, name: str) -> dict[Key, Any]:
        """The live state of projection ``name`` (do not mutate)."""
        for slot in self._slots:
            if slot.projection.name == name:
                return slot.state
        raise KeyError(f"no projection named {name!r}")

    def dump(self) -> dict[str, bytes]:
        """Serialized state of every projection, by name (what a checkpoint stores)."""
        return {slot.projection.name: slot.projection.dump(slot.state) for slot in self._slots}

    def views(self) -> BreakerViews:
        """Query the breaker projections (needs the four default ones)."""
        from sidecar.eventlog.breaker_views import BreakerViews

        return BreakerViews(
            self.state(BreakerStatusProjection.name),
            self.state(TransitionCountsProjection.name),
            self.state(OpenTimeProjection.name),
            self.state(RecoveryProjection.name),
        )

    async def load(self, prefix: str = "", names: Iterable[str] | None = None) -> dict[str, int]:
        """Resume projections from their checkpoints (a missing or foreign-format checkpoint
        means: start from position 0); returns the position each one resumed from.

        ``prefix`` reads other checkpoints of the same projections (the retention snapshots of
        :mod:`sidecar.eventlog.retention_base`); ``names`` limits it to some projections."""
        wanted = None if names is None else set(names)
        resumed: dict[str, int] = {}
        async with self._lock:
            for slot in self._slots:
                if wanted is not None and slot.projection.name not in wanted:
                    continue
                saved = await self._store.load_checkpoint(prefix + slot.projection.name)
                slot.state, slot.position = slot.projection.initial(), 0
                if saved is not None:
                    try:
                        slot.state = slot.projection.load(saved[1])
                        slot.position = saved[0]
                    except (ValueError, TypeError, KeyError):
                        slot.state, slot.position = slot.projection.initial(), 0
                slot.unsaved_events = 0
                resumed[slot.projection.name] = slot.position
        return resumed

    async def catch_up(self, max_events: int | None = None) -> int:
        """Fold events after ``position`` up to the head (or ``max_events`` of them), saving
        checkpoints every ``snapshot_every_events``; returns how many events were read."""
        async with self._lock:
            read = 0
            pending = asyncio.ensure_future(self._read_page(self.position + 1, max_events))
            try:
                while page := await pending:
                    read += len(page)
                    # Read the next page while this one is folded (the read runs off-loop).
                    left = None if max_events is None else max_events - read
                    pending = asyncio.ensure_future(
                        self._read_page(page[-1].global_position + 1, left)
                    )
                    await self._fold_and_snapshot(page)
            finally:
                pending.cancel()
            return read

    async def _read_page(self, from_position: int, max_events: int | None) -> list[StoredEvent]:
        if max_events is not None and max_events <= 0:
            return []
        limit = self._page_events if max_events is None else min(self._page_events, max_events)
        return await self._store.read_all(from_position=from_position, limit=limit)

    async def snapshot(self) -> None:
        """Save every projection's checkpoint now (e.g. on shutdown)."""
        async with self._lock:
            for slot in self._slots:
                await self._save(slot)

    async def lag(self) -> int:
        """Events in the log not yet folded: head - position."""
        return max(0, await self._store.head_position() - self.position)

    async def _fold_and_snapshot(self, page: list[StoredEvent]) -> None:
        """Fold ``page``, saving each projection's checkpoint exactly every N events."""
        every = self._snapshot_every_events
        start = 0
        while start < len(page):
            room = every - max(slot.unsaved_events for slot in self._slots)
            chunk = page[start : start + max(room, 1)]
            self._fold(chunk)
            start += len(chunk)
            for slot in self._slots:
                if slot.unsaved_events >= every:
                    await self._save(slot)

    def _fold(self, page: Iterable[StoredEvent]) -> None:
        slots = self._slots
        for event in page:
            try:
                payload = decode_payload(event.type, event.payload)
            except StoreError:
                payload = None  # undecodable: audit reports it; projections skip it
            position = event.global_position
            for slot in slots:
                if position > slot.position:
                    slot.projection.apply(slot.state, event, payload)
                    slot.position = position
                    slot.unsaved_events += 1
            self.events_folded += 1

    async def _save(self, slot: _Slot) -> None:
        await self._store.save_checkpoint(
            slot.projection.name, slot.position, slot.projection.dump(slot.state)
        )
        slot.unsaved_events = 0


async def rebuild(
    store: EventStore,
    projections: Sequence[Projection[Any]] | None = None,
    *,
    save: bool = True,
    page_events: int = DEFAULT_PROJECTION_PAGE_EVENTS,
) -> ProjectionRunner:
    """Fold the whole log into fresh projections (ignoring checkpoints); with ``save``, replace
    the checkpoints with the result. Returns the runner holding the rebuilt states.

    A log cut by retention cannot be re-read from its start: the rebuild then starts from the
    retention snapshots taken before the cuts (``runner.started_from`` says which), or raises
    ``StoreError`` when they are missing (see :mod:`sidecar.eventlog.retention_base`)."""
    from sidecar.eventlog.retention_base import resume_past_anchors

    runner = ProjectionRunner(
        store, projections, snapshot_every_events=2**62, page_events=page_events
    )
    runner.started_from = await resume_past_anchors(store, runner, strict=True)
    await runner.catch_up()
    if save:
        await runner.snapshot()
    return runner
