"""Retention on JetStream beyond the shared contract: what the order "anchor, then purge" and
several replicas on one stream need, against a real nats-server.

- A stream created to deny purges (no ``retention=1``) refuses a cut with one line saying
  what to do, and JetStream itself will not lift ``deny_purge``.
- An anchor whose purge never ran (the cutter crashed in between) hides its prefix from every
  read and refuses appends at or below it; ``verify`` passes; the next cut purges.
- A cut made through one replica is seen by another: its reads from memory hide the prefix,
  its cached head moves onto the anchor, its retries of deleted events are refused.
- A gap no anchor explains is still an error; a live follower skips what a cut deleted.
- Seeded random appends, retries, cuts and restarts keep the log whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import AsyncIterator

import nats
import nats.js.errors
import pytest

from sidecar.eventlog.audit import verify
from sidecar.eventlog.nats.retention import anchor_key, save_anchor
from sidecar.eventlog.nats.subjects import stream_tokens
from sidecar.eventlog.port import (
    BeforeAnchorError,
    EventStore,
    NewEvent,
    RetentionAnchor,
    StoredEvent,
    StoreError,
    open_store,
)
from tests.contract.store_contract import read_everything
from tests.integration.nats.helpers import fresh_store
from tests.support.events import StreamFactory
from tests.support.nats import NatsCluster

pytestmark = pytest.mark.integration

CUT_AT_NS = 1_800_000_000_000_000_000
SEEN_WITHIN_S = 10.0
"""How long another replica may take to learn an anchor (milliseconds when idle)."""


@contextlib.asynccontextmanager
async def jetstream(cluster: NatsCluster) -> AsyncIterator[nats.js.JetStreamContext]:
    nc = await nats.connect(servers=[n.url for n in cluster.nodes if n.running])
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def stored_messages(cluster: NatsCluster, stream: str) -> int:
    """Messages JetStream really holds (hidden ones included)."""
    async with jetstream(cluster) as js:
        return int((await js.stream_info(stream)).state.messages)


async def wait_until_hidden(store: EventStore, deleted: list[int]) -> list[StoredEvent]:
    """Read the whole log until none of the ``deleted`` positions shows (or fail)."""
    deadline = time.monotonic() + SEEN_WITHIN_S
    while True:
        everything = await read_everything(store)
        if not {e.global_position for e in everything} & set(deleted):
            return everything
        assert time.monotonic() < deadline, f"positions {deleted} still read after the cut"
        await asyncio.sleep(0.05)


async def test_a_stream_that_denies_purges_refuses_a_cut_with_one_line_saying_what_to_do(
    nats_single: NatsCluster,
) -> None:
    async with fresh_store(nats_single, 1) as (store, stream):  # no retention=1: deny_purge
        producer = StreamFactory()
        await store.append(producer.transitions(3))

        with pytest.raises(StoreError) as refused:
            await store.cut(producer.stream, 2, CUT_AT_NS)
        # Opening it again asking for retention cannot help: JetStream keeps deny_purge.
        wanting = open_store(nats_single.store_url(stream=stream, retention=1))
        try:
            with pytest.raises(StoreError) as refused_again:
                await wanting.cut(producer.stream, 2, CUT_AT_NS)
        finally:
            await wanting.close()
        async with jetstream(nats_single) as js:
            config = (await js.stream_info(stream)).config
            config.deny_purge = False
            with pytest.raises(nats.js.errors.APIError) as lift:
                await js.update_stream(config)
        kept = await store.read_stream(producer.stream)
        anchors = await store.anchors()

    message = str(refused.value)
    assert "\n" not in message
    assert f"JetStream stream {stream!r}" in message and "deny_purge" in message
    assert "retention=1" in message
    assert str(refused_again.value) == message
    assert lift.value.err_code == 10052  # "stream configuration update can not cancel deny purge"
    assert [e.version for e in kept] == [1, 2, 3]
    assert anchors == {}


async def test_an_anchor_whose_purge_never_ran_hides_the_prefix_until_a_cut_again_purges_it(
    nats_single: NatsCluster,
) -> None:
    async with fresh_store(nats_single, 1, retention=1) as (writer, stream):
        cut, kept = StreamFactory(instance="pod-cut"), StreamFactory(instance="pod-kept")
        cut_events = cut.transitions(5)
        outcomes = await writer.append(cut_events)  # positions 1..5, in writer's memory
        await writer.append(kept.transitions(2))  # 6, 7
        # The crash: a cutter wrote the anchor at version 3, then died before purging.
        written = RetentionAnchor(cut.stream, 3, cut_events[2].hash, outcomes[2].global_position,
                                  recorded_at_ns=1, cut_at_ns=CUT_AT_NS)
        async with jetstream(nats_single) as js:
            bucket = await js.key_value(f"{stream}_CHECKPOINTS")
            assert await save_anchor(bucket, anchor_key(stream_tokens(cut.stream)), written, 0)

        seen_by_writer = await wait_until_hidden(writer, [1, 2, 3])  # its memory learns too
        reader = open_store(nats_single.store_url(stream=stream, retention=1, recent_events=0))
        try:
            everything = await read_everything(reader)
            by_stream = await reader.read_stream(cut.stream)
            streams = await reader.streams()
            with pytest.raises(BeforeAnchorError):
                await reader.append([cut_events[0]])  # its slot is still there, but deleted
            report = await verify(reader)
            held_before = await stored_messages(nats_single, stream)

            again = await reader.cut(cut.stream, 2, CUT_AT_NS + 1)  # at or below: finish it
            held_after = await stored_messages(nats_single, stream)
            after = await verify(reader)
        finally:
            await reader.close()

    assert [e.global_position for e in seen_by_writer] == [4, 5, 6, 7]
    assert [e.global_position for e in everything] == [4, 5, 6, 7]
    assert [e.version for e in by_stream] == [4, 5]
    assert streams == sorted([cut.stream, kept.stream])
    assert report.ok and report.deleted_events == 3, report.summary()
    assert held_before == 7  # hidden, not yet deleted
    assert again == written  # the anchor does not move back
    assert held_after == 4
    assert after.ok, after.summary()


async def test_a_cut_through_one_replica_is_seen_by_another_that_chains_on_and_refuses_retries(
    nats_trio: NatsCluster,
) -> None:
    async with fresh_store(nats_trio, 3, retention=1) as (one, stream):
        other = open_store(nats_trio.store_url(stream=stream, replicas=3, retention=1))
        try:
            producer = StreamFactory()
            events = producer.transitions(3)
            await other.append(events)  # other caches the head (version 3) and holds 1..3
            anchor = await one.cut(producer.stream, 3, CUT_AT_NS)  # the whole stream

            hidden = await wait_until_hidden(other, [1, 2, 3])
            with pytest.raises(BeforeAnchorError):
                await other.append([events[1]])
            following = producer.transitions(1)  # chains on version 3, now the anchor
            outcome = await other.append(following)
            seen_by_one = await read_everything(one)
            report = await verify(other)
        finally:
            await other.close()

    assert hidden == []
    assert anchor.version == 3 and following[0].prev_hash == anchor.hash
    assert (outcome[0].version, outcome[0].global_position, outcome[0].duplicate) == (4, 4, False)
    assert [e.event_id for e in seen_by_one] == [following[0].event_id]
    assert report.ok, report.summary()


async def test_a_gap_no_anchor_explains_is_still_an_error(nats_single: NatsCluster) -> None:
    async with fresh_store(nats_single, 1, retention=1, recent_events=0) as (store, stream):
        producer = StreamFactory()
        await store.append(producer.transitions(4))
        async with jetstream(nats_single) as js:  # deleted behind the log's back, no anchor
            await js.purge_stream(stream, subject=f"{stream}.ev.>", seq=3)

        missing = re.escape("gap in the log: positions 1..2 are missing")
        with pytest.raises(StoreError, match=missing):
            await store.read_all()


async def test_a_live_follower_skips_what_a_cut_deleted(nats_single: NatsCluster) -> None:
    async with fresh_store(nats_single, 1, retention=1, recent_events=0) as (store, _):
        cut, kept = StreamFactory(instance="pod-cut"), StreamFactory(instance="pod-kept")
        await store.append(cut.transitions(2))  # 1, 2
        await store.cut(cut.stream, 1, CUT_AT_NS)
        follower = store.follow(1, wait_s=0.2)
        try:
            first = await anext(follower)  # the catch-up (live=True): position 1 is gone
            idle = await anext(follower)  # now the live consumer runs from position 3
            await store.append(cut.transitions(2))  # 3, 4: deleted before anyone pulls
            later = kept.transitions(1)
            await store.append(later)  # 5
            await store.cut(cut.stream, 4, CUT_AT_NS + 1)
            live: list[StoredEvent] = []
            deadline = time.monotonic() + SEEN_WITHIN_S
            while not live:
                assert time.monotonic() < deadline, "the follower never delivered position 5"
                live.extend((await anext(follower)).events)
        finally:
            await follower.aclose()

    assert first.live and [e.global_position for e in first.events] == [2]
    assert idle.events == ()
    assert [(e.global_position, e.event_id) for e in live] == [(5, later[0].event_id)]


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
async def test_random_appends_retries_cuts_and_restarts_keep_the_log_whole(
    nats_single: NatsCluster, seed: int
) -> None:
    """A seeded random run (a property test against a real server, so a few fixed seeds):
    ``verify`` passes, every event is stored at most once, retries below an anchor are refused
    and above it are duplicates, and what is read is exactly what the model kept."""
    rng = random.Random(seed)
    producers = [StreamFactory(instance=f"pod-{i}") for i in range(3)]
    produced: dict[str, list[NewEvent]] = {p.stream: [] for p in producers}
    positions: dict[str, int] = {}
    anchors: dict[str, int] = {}
    async with fresh_store(nats_single, 1, retention=1) as (first, stream):
        store: EventStore = first
        reopened: list[EventStore] = []
        url = nats_single.store_url(stream=stream, retention=1, recent_events=0)
        try:
            for _ in range(60):
                action = rng.choice(("append", "append", "retry", "cut", "restart"))
                producer = rng.choice(producers)
                events = produced[producer.stream]
                if action == "append":
                    batch = producer.transitions(rng.randint(1, 3))
                    for event, outcome in zip(batch, await store.append(batch), strict=True):
                        assert not outcome.duplicate
                        positions[event.event_id] = outcome.global_position
                    events.extend(batch)
                elif action == "retry" and events:
                    event = rng.choice(events)
                    if event.version <= anchors.get(producer.stream, 0):
                        with pytest.raises(BeforeAnchorError):
                            await store.append([event])
                    else:
                        (outcome,) = await store.append([event])
                        assert outcome.duplicate
                        assert outcome.global_position == positions[event.event_id]
                elif action == "cut" and events:
                    through = rng.randint(1, len(events))
                    anchor = await store.cut(producer.stream, through, CUT_AT_NS)
                    anchors[producer.stream] = max(anchors.get(producer.stream, 0), through)
                    assert anchor.version == anchors[producer.stream]
                elif action == "restart":
                    store = open_store(url)
                    reopened.append(store)
            report = await verify(store)
            everything = await read_everything(store)
            stored_anchors = await store.anchors()
            restarts = len(reopened)
        finally:
            for extra in reopened:
                await extra.close()

    kept = sorted(
        (positions[e.event_id], e.event_id)
        for name, events in produced.items()
        for e in events
        if e.version > anchors.get(name, 0)
    )
    assert anchors and restarts, "the seed must exercise cuts and restarts"
    assert report.ok, report.summary()
    assert [(e.global_position, e.event_id) for e in everything] == kept
    assert {name: a.version for name, a in stored_anchors.items()} == anchors
