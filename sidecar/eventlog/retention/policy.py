"""Retention policy: which of a stream's oldest events may be deleted. Pure (no I/O, no clock).

``sidecar eventlog serve --retain-days N --retain-events-per-stream M`` (either or both, as
EventStoreDB's ``$maxAge``/``$maxCount``): an event is past retention when it was recorded more
than N days ago, or when more than M newer events of its stream follow it. Deleting it is also
bounded by what the projections have folded (``folded_through``): the projections keep their
totals from a snapshot taken at that position, so an event they have not folded yet must stay.

Both rules and the bound hold for a whole prefix of a stream: versions, store times and global
positions rise together within a stream, so "version v may go" implies "every version below v
may go". :func:`last_deletable` finds the end of that prefix by binary search, asking the store
for one event per step (``O(log n)`` reads per stream). A store clock that steps back can make
store times not quite monotonic; the search then stops at a prefix that is slightly shorter or
longer than exact, never a hole in the middle.

Example::

    policy = RetentionPolicy(retain_days=30)
    policy.deletable(recorded_at_ns, version=7, head_version=90, folded_through=5000,
                     position=812, now_ns=time.time_ns())
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

NS_PER_DAY: Final = 86_400 * 10**9

DEFAULT_RETENTION_INTERVAL_S: Final = 60.0
"""How often the background job looks for events past retention."""
DEFAULT_RETENTION_CUT_EVENTS: Final = 10_000
"""Most events one cut deletes (one store transaction): a long backlog is cut in steps, so
appends are never held up behind one huge delete."""


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """What ``--retain-days`` / ``--retain-events-per-stream`` ask; validated on construction."""

    retain_days: float | None = None
    retain_events_per_stream: int | None = None
    interval_s: float = DEFAULT_RETENTION_INTERVAL_S
    cut_events: int = DEFAULT_RETENTION_CUT_EVENTS

    def __post_init__(self) -> None:
        if self.retain_days is None and self.retain_events_per_stream is None:
            raise ValueError("retention: give retain_days, retain_events_per_stream or both")
        if self.retain_days is not None and (
            isinstance(self.retain_days, bool)
            or not math.isfinite(self.retain_days)
            or self.retain_days <= 0
        ):
            raise ValueError(f"retain_days: must be a finite number > 0, got {self.retain_days!r}")
        if self.retain_events_per_stream is not None and self.retain_events_per_stream < 1:
            raise ValueError(
                f"retain_events_per_stream: must be >= 1, got {self.retain_events_per_stream}"
            )
        if not math.isfinite(self.interval_s) or self.interval_s <= 0:
            raise ValueError(f"retention_interval_s: must be a finite number > 0, "
                             f"got {self.interval_s!r}")
        if self.cut_events < 1:
            raise ValueError(f"retention_cut_events: must be >= 1, got {self.cut_events}")

    def describe(self) -> str:
        """For the startup log line, e.g. ``30 days or 100000 events per stream``."""
        parts = []
        if self.retain_days is not None:
            parts.append(f"{self.retain_days:g} days")
        if self.retain_events_per_stream is not None:
            parts.append(f"{self.retain_events_per_stream} events per stream")
        return " or ".join(parts)

    def past_retention(self, recorded_at_ns: int, version: int, head_version: int,
                       now_ns: int) -> bool:
        """Whether the event (of a stream whose head is ``head_version``) is past a rule."""
        if (self.retain_events_per_stream is not None
                and version <= head_version - self.retain_events_per_stream):
            return True
        return (self.retain_days is not None
                and recorded_at_ns < now_ns - int(self.retain_days * NS_PER_DAY))


@dataclass(frozen=True, slots=True)
class Probe:
    """What :func:`last_deletable` needs of one stored event."""

    version: int
    recorded_at_ns: int
    global_position: int


async def last_deletable(
    policy: RetentionPolicy,
    *,
    first_kept: int,
    head_version: int,
    folded_through: int,
    now_ns: int,
    event_at: Callable[[int], Awaitable[Probe | None]],
) -> int:
    """The highest version that may be deleted (``first_kept - 1`` when none may).

    ``first_kept`` is the stream's oldest kept version (anchor + 1), ``head_version`` its last;
    ``event_at(v)`` reads version ``v`` (None if absent, which ends the prefix there)."""

    async def may_go(version: int) -> bool:
        event = await event_at(version)
        return (
            event is not None
            and event.global_position <= folded_through
            and policy.past_retention(event.recorded_at_ns, version, head_version, now_ns)
        )

    low, high = first_kept - 1, head_version  # invariant: low may go (or is before the start)
    if policy.retain_days is None and policy.retain_events_per_stream is not None:
        high = head_version - policy.retain_events_per_stream  # the count rule's last victim
        if high >= first_kept and await may_go(high):  # steady state: one read
            return high
    if high < first_kept or not await may_go(first_kept):
        return low
    low = first_kept
    while low < high:
        middle = (low + high + 1) // 2
        if await may_go(middle):
            low = middle
        else:
            high = middle - 1
    return low
