"""The server's projection follower: keeps the read models current while the server runs.

One background task resumes the projections from their checkpoints, folds the log up to the
head, then waits on ``EventStore.wait_for_append`` and folds again. The projections are the
breaker ones of :mod:`sidecar.eventlog.projections.breakers`, the endpoint one of
:mod:`sidecar.eventlog.projections.endpoints`, :class:`EventCountsProjection` (events per type,
for ``eventlog_events_appended_total``) and :class:`UnknownValuesProjection` (stored enum values
the proto does not define, per field, for ``eventlog_unknown_values_total``), so every number
the server reports comes from folded log state and a rebuild can never double-count.

Threading: one event loop. Queries (``views``, ``event_counts``) read the live state between
two folded pages, which the loop never interleaves with a fold.

Example::

    follower = ProjectionFollower(store)
    await follower.load()
    task = asyncio.create_task(follower.run())
    follower.views().upstreams(time.time_ns())
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from sidecar.eventlog.enums import event_enum_fields
from sidecar.eventlog.port import EventStore, StoreError
from sidecar.eventlog.projections.base import Projection
from sidecar.eventlog.projections.breaker_views import BreakerViews
from sidecar.eventlog.projections.breakers import default_projections
from sidecar.eventlog.projections.counts import EventCountsProjection, UnknownValuesProjection
from sidecar.eventlog.projections.endpoints import EndpointEjectionsProjection, EndpointViews
from sidecar.eventlog.projections.runner import ProjectionRunner
from sidecar.eventlog.projections.shedding import SheddingPeriodsProjection, SheddingViews
from sidecar.eventlog.retention.base import resume_past_anchors
from sidecar.eventlog.settings import DEFAULT_PROJECTION_BATCH_EVENTS, DEFAULT_PROJECTION_WAIT_S

log = logging.getLogger("sidecar.eventlog.follower")

FAILURE_BACKOFF_S: Final = 1.0
"""Pause after a failed fold (store unavailable) before trying again."""


def server_projections() -> list[Projection[Any]]:
    """Every projection the server keeps (``sidecar eventlog rebuild`` rebuilds these)."""
    return [
        *default_projections(),
        EventCountsProjection(),
        EndpointEjectionsProjection(),
        SheddingPeriodsProjection(),
        UnknownValuesProjection(),
    ]


class ProjectionFollower:
    """Follows the log with a :class:`ProjectionRunner` (see the module docstring)."""

    def __init__(
        self,
        store: EventStore,
        *,
        batch_events: int = DEFAULT_PROJECTION_BATCH_EVENTS,
        wait_s: float = DEFAULT_PROJECTION_WAIT_S,
    ) -> None:
        self._store = store
        self._runner = ProjectionRunner(store, server_projections())
        self._batch_events = batch_events
        self._wait_s = wait_s
        self.head_position = 0
        """The highest log head the follower has seen."""
        self.caught_up = asyncio.Event()
        """Set whenever the follower has folded everything up to the head it last saw."""

    @property
    def position(self) -> int:
        """The global position every projection has folded up to."""
        return self._runner.position

    @property
    def runner(self) -> ProjectionRunner:
        """The runner folding the server's projections (the retention job snapshots it)."""
        return self._runner

    @property
    def events_folded(self) -> int:
        return self._runner.events_folded

    def views(self) -> BreakerViews:
        return self._runner.views()

    def event_counts(self) -> dict[str, int]:
        """Events in the log per type, as folded so far."""
        state = self._runner.state(EventCountsProjection.name)
        return {key[0]: entry.count for key, entry in sorted(state.items())}

    def endpoint_views(self) -> EndpointViews:
        return EndpointViews(self._runner.state(EndpointEjectionsProjection.name))

    def shedding_views(self) -> SheddingViews:
        return SheddingViews(self._runner.state(SheddingPeriodsProjection.name))

    def unknown_values(self) -> dict[str, int]:
        """Stored enum values without a name, per field: every enum field of every payload,
        at 0 until one turns up."""
        counts = dict.fromkeys(event_enum_fields(), 0)
        for key, entry in self._runner.state(UnknownValuesProjection.name).items():
            counts[key[0]] = counts.get(key[0], 0) + entry.count
        return dict(sorted(counts.items()))

    async def load(self) -> None:
        """Resume from the saved checkpoints (blocking only on the store's own threads)."""
        await self._runner.load()
        start = await resume_past_anchors(self._store, self._runner, strict=False)
        if start is not None and start.snapshot_positions:
            log.info("projections behind the retention cut resume from %s", start.describe())
        self.head_position = max(self.head_position, await self._store.head_position())

    async def step(self) -> int:
        """Fold up to ``batch_events`` events; returns how many were folded."""
        folded = await self._runner.catch_up(self._batch_events)
        self.head_position = max(self.head_position, self._runner.position)
        if self._runner.position >= self.head_position:
            self.caught_up.set()
        return folded

    async def run(self) -> None:
        """Fold forever (cancel to stop): catch up, then wait for each append."""
        while True:
            try:
                folded = await self.step()
                if folded:
                    continue
                self.caught_up.set()
                head = await self._store.wait_for_append(self._runner.position, self._wait_s)
                if head > self.head_position:
                    self.head_position = head
                    self.caught_up.clear()
            except asyncio.CancelledError:
                raise
            except (StoreError, OSError) as exc:
                log.error("projection follower: %s (retrying in %.1fs)", exc, FAILURE_BACKOFF_S)
                await asyncio.sleep(FAILURE_BACKOFF_S)

    async def save(self) -> None:
        """Save every projection's checkpoint now (graceful shutdown)."""
        await self._runner.snapshot()
