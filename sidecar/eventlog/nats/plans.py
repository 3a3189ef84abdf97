"""The records an append is planned with, and the per-stream locks that order appends.

Pure (asyncio primitives only, no I/O): a ``Plan`` says what one attempt at an append will
write against which heads; ``check_chain`` is the chain rule a new event must pass.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Final

from sidecar import chain
from sidecar.eventlog.store import AppendOutcome, ChainError, NewEvent


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


def check_chain(event: NewEvent, head_version: int, head_hash: bytes) -> None:
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
