"""Appending: validate, plan every event against its stream's head, commit, plan again.

An append holds its streams' locks (appends to one stream from one adapter are decided in
arrival order), plans (duplicate, conflict, chain error or new), and hands the new events to
the group commit; a head another writer moved, or a transient failure, means planning again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Final

from sidecar.eventlog.nats.codec import Slot
from sidecar.eventlog.nats.commit import GroupCommit
from sidecar.eventlog.nats.errors import RETRY_BACKOFF_S, StalePlan, TransientFailure
from sidecar.eventlog.nats.plans import EMPTY_HEAD, Head, Plan
from sidecar.eventlog.nats.settings import MAX_ATOMIC_BATCH_EVENTS
from sidecar.eventlog.port import (
    AppendOutcome,
    ChainError,
    ConflictError,
    InvalidEventError,
    NewEvent,
    StoredEvent,
    StoreError,
    check_after_anchor,
    check_chain,
    check_same_content,
    validate_new_event,
    version_taken,
)

_MAX_STALE_REPLANS: Final = 50
"""Re-plans after another writer moved a head, before giving up (contention bound)."""
_SLOT_LOOKUP_CONCURRENCY: Final = 64


class Appends(GroupCommit):
    """The port's ``append`` on JetStream (see the package docstring, **The chain**)."""

    async def append(self, events: Sequence[NewEvent]) -> list[AppendOutcome]:
        if not events:
            return []
        for event in events:
            validate_new_event(event)
        unique: dict[str, NewEvent] = {}
        for event in events:
            known = unique.get(event.event_id)
            if known is None:
                unique[event.event_id] = event
            else:
                check_same_content(known, event)
        order = list(unique.values())
        if len(order) > MAX_ATOMIC_BATCH_EVENTS:
            raise InvalidEventError(
                "events", f"{len(order)} events in one batch; at most {MAX_ATOMIC_BATCH_EVENTS}"
            )
        await self._ensure()
        outcomes = await self._append_unique(order)
        by_id = {o.event_id: o for o in outcomes}
        return [by_id[event.event_id] for event in events]

    async def _append_unique(self, order: list[NewEvent]) -> list[AppendOutcome]:
        deadline = asyncio.get_running_loop().time() + self._settings.append_retry_s
        streams = {event.stream for event in order}
        async with self._stream_locks.hold(streams):
            return await self._append_locked(order, streams, deadline)

    async def _append_locked(
        self, order: list[NewEvent], streams: set[str], deadline: float
    ) -> list[AppendOutcome]:
        """Plan, commit, and on a stale head or a transient failure plan again.

        The caller holds the locks of ``streams``: appends to one stream from this adapter
        are decided one after the other (like the SQLite writer), so a batch that continues
        the previous one is judged against the head that batch left.
        """
        loop = asyncio.get_running_loop()
        attempts: set[str] = set()  # batch ids of our own attempts (an ack may have been lost)
        stale = transient = 0
        last_problem = ""
        while True:
            cached = any(stream in self._heads for stream in streams)
            try:
                try:
                    plan = await self._plan(order, attempts)
                except (ChainError, ConflictError):
                    if not cached:
                        raise
                    # The verdict may rest on a head cached before another replica appended:
                    # judge again against the heads the leader has now.
                    for stream in streams:
                        self._heads.pop(stream, None)
                    plan = await self._plan(order, attempts)
                if plan.new:
                    positions = await self._commit(plan, attempts)
                    self._settle(plan, positions)
                result = [o for o in plan.outcomes if o is not None]
                assert len(result) == len(order)
                return result
            except StalePlan as exc:
                stale += 1
                last_problem = str(exc)
                for stream in streams:
                    self._heads.pop(stream, None)
                if stale > _MAX_STALE_REPLANS:
                    raise StoreError(
                        f"append gave up after {stale} attempts: other writers kept moving the "
                        f"stream heads ({last_problem})"
                    ) from None
                if stale > 1:
                    await asyncio.sleep(RETRY_BACKOFF_S[min(stale, len(RETRY_BACKOFF_S)) - 1])
            except TransientFailure as exc:
                transient += 1
                last_problem = str(exc)
                for stream in streams:
                    self._heads.pop(stream, None)
                pause = RETRY_BACKOFF_S[min(transient, len(RETRY_BACKOFF_S)) - 1]
                if loop.time() + pause > deadline:
                    raise StoreError(
                        f"JetStream did not accept the batch within append_retry_s="
                        f"{self._settings.append_retry_s}s: {last_problem}"
                    ) from None
                await asyncio.sleep(pause)

    async def _plan(self, order: list[NewEvent], attempts: set[str]) -> Plan:
        """Check every event against its stream head: duplicate, conflict, chain error or new."""
        plan = Plan(outcomes=[None] * len(order))
        by_stream: dict[str, list[int]] = {}
        for index, event in enumerate(order):
            by_stream.setdefault(event.stream, []).append(index)
        heads = await self._gather([self._head(stream) for stream in by_stream])
        for (stream, indexes), head in zip(by_stream.items(), heads, strict=True):
            anchor = self._book.get(stream)  # as fresh as the head (``_head`` reads both)
            floor = anchor.version if anchor is not None else 0  # below: refused, not looked up
            taken = [order[i].version for i in indexes if floor < order[i].version <= head.version]
            slots = await self._load_slots(stream, taken) if taken else {}
            running_version, running_hash = head.version, head.hash
            in_batch: dict[int, str] = {}
            for index in indexes:
                event = order[index]
                check_after_anchor(event, anchor)  # deleted slots are empty: refuse first
                if event.version <= head.version:
                    slot = slots.get(event.version)
                    if slot is None:
                        raise TransientFailure(
                            f"stream {stream!r}: version {event.version} not found although "
                            f"the head is version {head.version} (leader change?)"
                        )
                    if slot.event.event_id != event.event_id:
                        raise version_taken(event, slot.event.event_id, head.version)
                    check_same_content(slot.event.as_new_event(), event)
                    plan.outcomes[index] = AppendOutcome(
                        event.event_id,
                        slot.event.global_position,
                        event.version,
                        duplicate=slot.batch_id not in attempts,
                    )
                    continue
                if event.version <= running_version:
                    raise version_taken(event, in_batch.get(event.version, "?"), running_version)
                check_chain(event, running_version, running_hash)
                running_version, running_hash = event.version, event.hash
                in_batch[event.version] = event.event_id
                if stream not in plan.expectations:
                    plan.expectations[stream] = head
                plan.new.append((index, event))
        return plan

    def _settle(self, plan: Plan, positions: list[int]) -> None:
        for (index, event), position in zip(plan.new, positions, strict=True):
            plan.outcomes[index] = AppendOutcome(event.event_id, position, event.version, False)
            self._heads[event.stream] = Head(event.version, event.hash, position)
            self._remember(StoredEvent.of(event, position, plan.recorded_at_ns))
        if len(self._heads) > 100_000:  # bound the cache; heads are re-read on demand
            self._heads.clear()

    def _remember(self, event: StoredEvent) -> None:
        """Keep a committed event to answer reads of it (bounded by ``recent_events``)."""
        if self._settings.recent_events <= 0:
            return
        self._recent[event.global_position] = event
        self._recent_order.append(event.global_position)
        while len(self._recent_order) > self._settings.recent_events:
            self._recent.pop(self._recent_order.popleft(), None)

    async def stream_head(self, stream: str) -> tuple[int, bytes]:
        """From the head this adapter keeps for appends (one leader read when not known)."""
        await self._ensure()
        try:
            head = await self._head(stream)
        except TransientFailure as exc:
            raise StoreError(str(exc)) from None
        return (head.version, head.hash) if head.version else (0, b"")

    async def _head(self, stream: str) -> Head:
        cached = self._heads.get(stream)
        if cached is not None:
            return cached
        # The last message first, then the anchor: a cut writes its anchor before it purges,
        # so a stream found empty here has its anchor seen below (never a stale genesis).
        found = await self._leader_get_last(self._subjects.stream_all(stream))
        anchor = await self._fresh_anchor(stream)
        sequence = found.event.global_position if found is not None else 0
        if found is not None and (anchor is None or found.event.version > anchor.version):
            head = Head(found.event.version, found.event.hash, sequence)
        elif anchor is not None:  # cut whole (or its purge pending): chain on the anchor
            head = Head(anchor.version, anchor.hash, sequence)
        else:
            head = EMPTY_HEAD
        self._heads[stream] = head
        return head

    async def _load_slots(self, stream: str, versions: list[int]) -> dict[int, Slot]:
        semaphore = asyncio.Semaphore(_SLOT_LOOKUP_CONCURRENCY)

        async def one(version: int) -> Slot | None:
            async with semaphore:
                return await self._leader_get_last(self._subjects.slot(stream, version))

        found = await self._gather([one(v) for v in versions])
        return {v: slot for v, slot in zip(versions, found, strict=True) if slot is not None}
