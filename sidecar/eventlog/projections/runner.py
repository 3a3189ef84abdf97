"""The projection runner: folds the log into projections from their checkpoints, and rebuilds.

``ProjectionRunner`` folds the log from each projection's checkpoint, saves a checkpoint
(position and state together, atomically, via ``EventStore.save_checkpoint``) every
``snapshot_every_events`` events, reports its lag, and ``rebuild`` starts from nothing (or, on
a log cut by retention, from the retention snapshots: :mod:`sidecar.eventlog.retention.base`).
The projections themselves are pure folds (:mod:`sidecar.eventlog.projections.breakers`).

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from sidecar.eventlog.event_protos import decode_payload
from sidecar.eventlog.port import EventStore, StoredEvent, StoreError, check_read_limit
from sidecar.eventlog.projections.base import Key, Projection
from sidecar.eventlog.projections.breakers import (
    BreakerStatusProjection,
    OpenTimeProjection,
    RecoveryProjection,
    TransitionCountsProjection,
    default_projections,
)

if TYPE_CHECKING:
    from sidecar.eventlog.projections.breaker_views import BreakerViews
    from sidecar.eventlog.retention.base import RetentionStart

DEFAULT_SNAPSHOT_EVERY_EVENTS: Final = 1000
"""Events folded between two checkpoints of a projection."""
DEFAULT_PROJECTION_PAGE_EVENTS: Final = 5000
"""Events read from the store per page while folding."""


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
        check_read_limit(page_events, "page_events")
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
        from sidecar.eventlog.projections.breaker_views import BreakerViews

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
        :mod:`sidecar.eventlog.retention.base`); ``names`` limits it to some projections."""
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
    ``StoreError`` when they are missing (see :mod:`sidecar.eventlog.retention.base`)."""
    from sidecar.eventlog.retention.base import resume_past_anchors

    runner = ProjectionRunner(
        store, projections, snapshot_every_events=2**62, page_events=page_events
    )
    runner.started_from = await resume_past_anchors(store, runner, strict=True)
    await runner.catch_up()
    if save:
        await runner.snapshot()
    return runner
