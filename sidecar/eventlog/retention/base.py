"""Retention snapshots: the projection states a cut log's totals come from.

Once retention deleted events, folding the log from its start would miss them, and every total
(transitions, open seconds, events per type) would drop. So before each cut the retention job
saves every projection's state under ``retention-base/<name>`` (:func:`save_base`), and cuts
only events at or below the lowest of those positions. Whoever folds a cut log from scratch
(``sidecar eventlog rebuild``, or a server whose checkpoints are older than the cut) starts from
those snapshots instead (:func:`resume_past_anchors`) and reads on from there: the result equals
the projections of the log never cut, event for event.

Threading: coroutines for the runner's event loop; ``save_base`` reads the runner's states in
one step (no await between), so every snapshot is a consistent fold of a log prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sidecar.eventlog.port import EventStore, StoreError, deleted_events
from sidecar.eventlog.projections.runner import ProjectionRunner

__all__ = ["BASE_PREFIX", "RetentionStart", "resume_past_anchors", "save_base"]

BASE_PREFIX: Final = "retention-base/"
"""Checkpoint names of the retention snapshots: ``retention-base/breaker_status`` etc."""


@dataclass(frozen=True, slots=True)
class RetentionStart:
    """Where a fold of a cut log started: the snapshots, and the anchors they cover."""

    snapshot_positions: dict[str, int]
    anchored_streams: int
    deleted_events: int
    deleted_through: int
    """The highest global position retention deleted (every snapshot is at or past it)."""

    def describe(self) -> str:
        """One line, e.g. for ``rebuild``'s output."""
        low = min(self.snapshot_positions.values(), default=0)
        return (
            f"the retention snapshots at position {low}"
            + (f"..{max(self.snapshot_positions.values())}"
               if len(set(self.snapshot_positions.values())) > 1 else "")
            + f" (anchors of {self.anchored_streams} streams, {self.deleted_events} events "
            f"deleted by retention up to position {self.deleted_through})"
        )


async def save_base(store: EventStore, runner: ProjectionRunner) -> int:
    """Save every projection's current state as its retention snapshot; returns the position
    retention may cut up to (the lowest projection position)."""
    positions = runner.positions()
    states = runner.dump()  # same step as positions(): one consistent fold
    for name in sorted(positions):
        await store.save_checkpoint(BASE_PREFIX + name, positions[name], states[name])
    return min(positions.values(), default=0)


async def resume_past_anchors(
    store: EventStore, runner: ProjectionRunner, *, strict: bool
) -> RetentionStart | None:
    """Make every projection of ``runner`` start past what retention deleted.

    ``strict`` (a rebuild): every projection restarts from its retention snapshot. Otherwise (a
    server starting from its checkpoints) only those whose checkpoint is behind the deleted
    positions do. Returns None for a log never cut. Raises ``StoreError`` naming the
    projections that have no snapshot reaching the cut: folding them would lose totals."""
    anchors = await store.anchors()
    if not anchors:
        return None
    deleted_through = max(anchor.global_position for anchor in anchors.values())
    positions = runner.positions()
    behind = [name for name, position in positions.items()
              if strict or position < deleted_through]
    if behind:
        positions.update(await runner.load(BASE_PREFIX, behind))
    short = sorted(name for name in behind if positions[name] < deleted_through)
    if short:
        raise StoreError(
            f"the log was cut by retention up to position {deleted_through}, but the retention "
            f"snapshot of {', '.join(short)} ends before it "
            f"(at {min(positions[name] for name in short)}): its totals would miss deleted "
            f"events. Restore the checkpoints (names {BASE_PREFIX}*) from a backup of this log"
        )
    return RetentionStart(
        snapshot_positions={name: positions[name] for name in behind},
        anchored_streams=len(anchors),
        deleted_events=deleted_events(anchors),
        deleted_through=deleted_through,
    )
