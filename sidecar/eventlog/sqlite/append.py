"""One batch of appends on the SQLite writer: the port's checks, then the insert.

Runs on the store's writer thread inside the group transaction, in the batch's own SAVEPOINT
(:mod:`sidecar.eventlog.sqlite.writer` rolls it back when this raises). Checks, in order, for
each event: well-formed; a repeat of an event id (identical content: the original position,
``duplicate``); at or below the stream's retention anchor (refused); the version and
``prev_hash`` following the head; the hash matching the content.
"""

from __future__ import annotations

import sqlite3

from sidecar import chain
from sidecar.eventlog.port import (
    AppendOutcome,
    NewEvent,
    RetentionAnchor,
    StoredEvent,
    check_after_anchor,
    check_chain,
    check_same_content,
    validate_new_event,
    version_taken,
)
from sidecar.eventlog.sqlite.schema import (
    INSERT,
    event_id_at,
    load_anchor,
    load_by_event_id,
    stream_head,
)


def append_batch(
    conn: sqlite3.Connection,
    events: tuple[NewEvent, ...],
    next_position: int,
    recorded_at_ns: int,
) -> tuple[list[AppendOutcome], int]:
    """Check and insert one batch; raises (and stores nothing) on the first bad event."""
    stored = load_by_event_id(conn, [event.event_id for event in events])
    in_batch: dict[str, tuple[NewEvent, AppendOutcome]] = {}
    heads: dict[str, tuple[int, bytes]] = {}
    anchors: dict[str, RetentionAnchor | None] = {}
    slots: dict[tuple[str, int], str] = {}  # (stream, version) -> event_id, this batch
    rows: list[tuple[object, ...]] = []
    outcomes: list[AppendOutcome] = []
    for event in events:
        validate_new_event(event)
        known = in_batch.get(event.event_id)
        if known is not None:
            check_same_content(known[0], event)
            outcomes.append(known[1])
            continue
        existing = stored.get(event.event_id)
        if existing is not None:
            check_same_content(existing.as_new_event(), event)
            outcomes.append(
                AppendOutcome(event.event_id, existing.global_position, existing.version, True)
            )
            continue
        if event.stream not in anchors:
            anchors[event.stream] = load_anchor(conn, event.stream)
        check_after_anchor(event, anchors[event.stream])
        head_version, head_hash = heads.get(event.stream) or stream_head(conn, event.stream)
        if event.version <= head_version:
            holder = slots.get((event.stream, event.version)) or event_id_at(
                conn, event.stream, event.version
            )
            raise version_taken(event, holder, head_version)
        check_chain(event, head_version, head_hash)
        position = next_position
        next_position += 1
        heads[event.stream] = (event.version, event.hash)
        slots[(event.stream, event.version)] = event.event_id
        outcome = AppendOutcome(event.event_id, position, event.version, False)
        in_batch[event.event_id] = (event, outcome)
        outcomes.append(outcome)
        record_hash = chain.compute_record_hash(
            hash=event.hash, global_position=position, recorded_at_ns=recorded_at_ns
        )
        rows.append(StoredEvent.of(event, position, recorded_at_ns, record_hash).values())
    conn.executemany(INSERT, rows)
    return outcomes, next_position
