"""The records an append is planned with, and the per-stream locks that order appends.

Pure (asyncio primitives only, no I/O): a ``Plan`` says what one attempt at an append will
write against which heads (the chain rule each new event must pass is the port's
``check_chain``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Final

from sidecar import chain
from sidecar.eventlog.port import AppendOutcome, NewEvent


@dataclass(frozen=True, slots=True)
class Head:
    """The last stored event of one stream: its version, hash and stream sequence."""

    version: int
    hash: bytes
    sequence: int


EMPTY_HEAD: Final = Head(0, chain.GENESIS_HASH, 0)


@dataclass
class Plan:
    """What one attempt at an append will do."""

    outcomes: list[AppendOutcome | None]
    """Per unique input event: known now (duplicate) or None (to be written)."""
    new: list[tuple[int, NewEvent]] = field(default_factory=list)
    """(index into outcomes, event) to publish, grouped by stream, in version order."""
    expectations: dict[str, Head] = field(default_factory=dict)
    """Stream → the head the batch was planned against."""
    recorded_at_ns: int = 0
    """Set when the plan is sent (the group's clock reading)."""


@dataclass(eq=False)
class PendingAppend:
    """A plan waiting for the next group commit, and who waits for it."""

    plan: Plan
    attempts: set[str]
    future: asyncio.Future[list[int]]


class KeyedLocks:
    """One ``asyncio.Lock`` per key, created on demand and dropped when unused."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, keys: Iterable[str]) -> AsyncIterator[None]:
        """Hold the locks of ``keys`` (taken in sorted order: no deadlock between holders)."""
        ordered = sorted(set(keys))
        entries = []
        for key in ordered:
            entry = self._locks.setdefault(key, (asyncio.Lock(), [0]))
            entry[1][0] += 1
            entries.append((key, entry))
        taken: list[asyncio.Lock] = []
        try:
            for _, (lock, _) in entries:
                await lock.acquire()
                taken.append(lock)
            yield
        finally:
            for lock in reversed(taken):
                lock.release()
            for key, (_, users) in entries:
                users[0] -= 1
                if users[0] == 0:
                    del self._locks[key]
