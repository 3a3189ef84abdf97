"""Reading the log: ``read_stream``, ``read_all`` and ``streams`` over one scan.

The scan answers what this adapter committed recently from memory and the rest from batched
direct gets; a read that ends before the head the leader reports (a lagging replica on R3) is
asked again, and a gap in positions is legitimate only where retention cut.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from sidecar.eventlog.nats.errors import TransientFailure
from sidecar.eventlog.nats.lookups import JetStreamLookups
from sidecar.eventlog.port import (
    DEFAULT_READ_LIMIT,
    NO_FILTER,
    EventFilter,
    StoredEvent,
    StoreError,
    check_read_limit,
)

_MAX_SEQUENCE: Final = 2**64 - 1
"""JetStream stream sequences are unsigned 64-bit."""
_STALE_READ_RETRIES: Final = 40
_STALE_READ_PAUSE_S: Final = 0.05


class Reads(JetStreamLookups):
    """The port's reads on JetStream (see the package docstring, **Reads**)."""

    async def read_stream(
        self, stream: str, from_version: int = 1, limit: int = DEFAULT_READ_LIMIT
    ) -> list[StoredEvent]:
        check_read_limit(limit)
        await self._ensure()
        try:
            anchor = await self._fresh_anchor(stream)  # versions at or below it were deleted
        except TransientFailure as exc:  # reads are not retried here: the caller may ask again
            raise StoreError(str(exc)) from None
        start_version = max(from_version, 1, anchor.version + 1 if anchor is not None else 1)
        first = await self._leader_get_last(self._subjects.slot(stream, start_version))
        if first is None:
            return []
        head = await self._leader_get_last(self._subjects.stream_all(stream))
        last_version = head.event.version if head is not None else start_version
        wanted = min(limit, last_version - start_version + 1)
        events = await self._scan(
            first.event.global_position, wanted, self._subjects.stream_all(stream),
            lambda event: event.stream == stream,
        )
        # Versions must follow on; a lagging replica may have ended early (then: retried).
        for offset, event in enumerate(events):
            if event.version != start_version + offset:
                raise StoreError(
                    f"stream {stream!r}: expected version {start_version + offset} at position "
                    f"{event.global_position}, found {event.version}"
                )
        return events

    async def read_all(
        self,
        from_position: int = 1,
        limit: int = DEFAULT_READ_LIMIT,
        filter: EventFilter = NO_FILTER,
    ) -> list[StoredEvent]:
        check_read_limit(limit)
        await self._ensure()
        if from_position > _MAX_SEQUENCE:  # JetStream would call the request malformed
            return []
        return await self._scan(
            max(from_position, 1),
            limit,
            self._subjects.filter_for(filter),
            None if filter == NO_FILTER else filter.matches,
        )

    async def _scan(
        self,
        start: int,
        limit: int,
        subject: str | None,
        keep: Callable[[StoredEvent], bool] | None,
    ) -> list[StoredEvent]:
        """Events from position ``start`` on that are on ``subject`` and pass ``keep``.

        Events this adapter committed recently come from memory; the rest from direct-get
        batches. When a batch ends early, the leader decides whether that was the end of the
        log or a lagging replica (then it asks again). ``keep`` must select no event outside
        ``subject`` (the server-side filter); it may select fewer.
        """
        found: list[StoredEvent] = []
        next_seq = start
        retries = 0
        book = self._book  # events at or below an anchor are hidden until purged
        while len(found) < limit:
            remembered = self._recent.get(next_seq)
            if remembered is not None:
                while remembered is not None and len(found) < limit:
                    if (keep is None or keep(remembered)) and not (book and book.hides(remembered)):
                        found.append(remembered)
                    next_seq += 1
                    remembered = self._recent.get(next_seq)
                continue
            want = self._settings.read_batch if keep is not None else limit - len(found)
            batch, pending = await self._direct_batch(
                next_seq, want, subject, with_sequences=next_seq <= book.highest_position
            )
            for event in batch:
                if subject is None and event.global_position != next_seq and not (
                    await self._gap_explained(next_seq, event.global_position - 1)
                ):
                    raise StoreError(
                        f"gap in the log: positions {next_seq}..{event.global_position - 1} are "
                        f"missing and no retention anchor reaches them (the highest is at "
                        f"position {book.highest_position})"
                    )
                next_seq = event.global_position + 1
                if (keep is None or keep(event)) and not (book and book.hides(event)):
                    found.append(event)
                    if len(found) == limit:
                        return found
            if batch and pending:
                continue  # the responder has more; keep going
            # The responder has nothing more. Not the end if this adapter knows of a later
            # position (it appended it, or was told), unless retention may have deleted the
            # newest positions (then the leader's last message settles it); else on R1 the
            # responder is the leader, which settles it; on R3 it may be a lagging follower:
            # the leader decides.
            tail_may_be_cut = bool(book) or retries >= 3
            if next_seq <= self._head_seen and subject is None:
                if tail_may_be_cut and not await self._leader_has_after(
                    self._subjects.events, next_seq
                ):
                    return found
            elif not self._replicated:
                return found
            elif subject is None:
                if tail_may_be_cut:
                    if not await self._leader_has_after(self._subjects.events, next_seq):
                        return found
                elif next_seq > await self.head_position():
                    return found
            elif not await self._leader_has_after(subject, next_seq):
                return found
            retries += 1
            if retries > _STALE_READ_RETRIES:
                raise StoreError(
                    f"the replica answering reads stays behind the leader at position "
                    f"{next_seq - 1}"
                )
            await asyncio.sleep(_STALE_READ_PAUSE_S)
        return found

    async def streams(self) -> list[str]:
        await self._ensure()
        names: list[str] = []
        offset = 0
        while True:
            info = await self._stream_info(
                {"subjects_filter": self._subjects.first_versions(), "offset": offset}
            )
            subjects: dict[str, int] = info["state"].get("subjects") or {}
            names.extend(self._subjects.stream_of(subject) for subject in subjects)
            offset += len(subjects)
            total = int(info.get("total") or 0)
            if not subjects or offset >= total:
                break
        # A stream cut whole has no version 1 any more; its anchor keeps it listed.
        return sorted(set(names) | set(await self.anchors()))
