"""What the JetStream adapter promises beyond the shared contract.

Idempotency that outlives JetStream's duplicate window, several adapters (event log replicas)
on one stream, waking across adapters, checkpoints larger than one NATS message, and refusing
a stream whose settings would break the guarantees.
"""

from __future__ import annotations

import asyncio
import json
import time

import nats
import pytest
from nats.js.api import StreamConfig

from sidecar.eventlog.nats import NatsEventStore, NatsSettings
from sidecar.eventlog.port import ConflictError, StoreError, open_store
from tests.contract.store_contract import read_everything
from tests.integration.nats.helpers import drop_stream, fresh_store
from tests.support.events import StreamFactory
from tests.support.nats import NatsCluster, unique_stream_name
from tests.support.procs import free_port

pytestmark = pytest.mark.integration

DUPLICATE_WINDOW_S = 1.0
"""A short JetStream duplicate window, so a test can outwait it."""


async def test_retry_after_the_duplicate_window_stores_nothing_twice_and_conflicts_still_fail(
    nats_single: NatsCluster,
) -> None:
    async with fresh_store(nats_single, 1, duplicate_window_s=DUPLICATE_WINDOW_S) as (
        store,
        stream,
    ):
        producer = StreamFactory()
        batch = producer.transitions(3)
        first = await store.append(batch)
        await asyncio.sleep(DUPLICATE_WINDOW_S * 1.5)  # past any Nats-Msg-Id de-duplication

        # A fresh adapter (another replica, or a restart): nothing cached anywhere.
        later = open_store(nats_single.store_url(stream=stream, duplicate_window_s=1))
        try:
            retried = await later.append(batch)
            rival = StreamFactory().transition("inventory")  # a different version 1
            with pytest.raises(ConflictError) as caught:
                await later.append([rival])
            head = await later.head_position()
            everything = await read_everything(later)
        finally:
            await later.close()

    assert [o.global_position for o in retried] == [o.global_position for o in first]
    assert all(o.duplicate for o in retried)
    assert caught.value.existing_event_id == batch[0].event_id
    assert head == 3
    assert [e.event_id for e in everything] == [e.event_id for e in batch]


async def test_jetstream_itself_refuses_a_second_message_at_a_stream_version_after_the_window(
    nats_single: NatsCluster,
) -> None:
    """Not only the adapter's checks: the stream's per-subject rule holds for any writer."""
    async with fresh_store(nats_single, 1, duplicate_window_s=DUPLICATE_WINDOW_S) as (
        store,
        stream,
    ):
        await store.append([StreamFactory().transition()])
        await asyncio.sleep(DUPLICATE_WINDOW_S * 1.5)
        nc = await nats.connect(nats_single.nodes[0].url)
        try:
            js = nc.jetstream()
            stored = await js.get_msg(stream, seq=1)
            assert stored.subject is not None
            reply = await nc.request(stored.subject, b"a forged rewrite", timeout=5)
            info = await js.stream_info(stream)
        finally:
            await nc.close()

    refusal = json.loads(reply.data)
    assert refusal["error"]["err_code"] == 10077  # maximum messages per subject exceeded
    assert info.state.messages == 1 and info.state.last_seq == 1


async def test_two_adapters_on_one_stream_append_in_turn_with_gap_free_positions(
    nats_trio: NatsCluster,
) -> None:
    async with fresh_store(nats_trio, 3) as (one, stream):
        other = open_store(nats_trio.store_url(stream=stream, replicas=3))
        try:
            producer = StreamFactory()
            events = producer.transitions(9)
            await one.append(events[0:3])
            await other.append(events[3:6])  # other never saw the stream head before
            await one.append(events[6:9])  # one's idea of the head is now stale
            through_other = await read_everything(other)
            through_one = await read_everything(one)
        finally:
            await other.close()

    assert [e.global_position for e in through_other] == list(range(1, 10))
    assert [e.event_id for e in through_other] == [e.event_id for e in events]
    assert through_one == through_other


async def test_racing_adapters_store_each_version_once(nats_trio: NatsCluster) -> None:
    async with fresh_store(nats_trio, 3) as (one, stream):
        other = open_store(nats_trio.store_url(stream=stream, replicas=3))
        try:
            producer = StreamFactory()
            batches = [producer.transitions(5) for _ in range(6)]

            async def ship(store_order: list[int]) -> None:
                stores = [one, other]
                for batch, which in zip(batches, store_order, strict=True):
                    await stores[which].append(batch)

            # Both adapters ship the same batches (a producer retrying through either).
            await asyncio.gather(ship([0, 1, 0, 1, 0, 1]), ship([1, 0, 1, 0, 1, 0]))
            everything = await read_everything(one)
        finally:
            await other.close()

    assert [e.global_position for e in everything] == list(range(1, 31))
    assert [e.version for e in everything] == list(range(1, 31))


async def test_appends_refused_by_the_server_for_a_stale_head_are_rejudged_and_others_commit(
    nats_single: NatsCluster,
) -> None:
    async with fresh_store(nats_single, 1, max_inflight_batches=1) as (lagging, stream):
        other = open_store(nats_single.store_url(stream=stream))
        try:
            x, y, z = StreamFactory("x", "1"), StreamFactory("y", "1"), StreamFactory("z", "1")
            # lagging now caches the heads of x, y and z (version 1 each)
            await lagging.append([x.transition(), y.transition(), z.transition()])
            x2 = x.transition()
            await other.append([x2])  # x moved on behind lagging's back

            # x2 again, plus new events of y and z, concurrently: with every head cached they
            # share one atomic batch, which JetStream refuses (x's head moved); each is then
            # judged again on its own.
            results = await asyncio.gather(
                lagging.append([x2]), lagging.append([y.transition()]),
                lagging.append([z.transition()]),
            )
            everything = await read_everything(lagging)
        finally:
            await other.close()

    assert results[0][0].duplicate and results[0][0].global_position == 4
    assert not results[1][0].duplicate and not results[2][0].duplicate
    assert [e.global_position for e in everything] == [1, 2, 3, 4, 5, 6]
    assert sorted(e.stream for e in everything[4:]) == ["y/1", "z/1"]


async def test_wait_for_append_wakes_when_another_adapter_appends(
    nats_trio: NatsCluster,
) -> None:
    async with fresh_store(nats_trio, 3) as (waiting, stream):
        writer = open_store(nats_trio.store_url(stream=stream, replicas=3))
        try:
            assert await waiting.head_position() == 0
            waiter = asyncio.create_task(waiting.wait_for_append(0, timeout_s=60))
            await asyncio.sleep(0.1)
            await writer.append(StreamFactory().transitions(2))
            woke_at = await asyncio.wait_for(waiter, 30)
        finally:
            await writer.close()

    assert woke_at == 2


async def test_checkpoint_larger_than_one_nats_message_round_trips_and_can_shrink_again(
    nats_trio: NatsCluster,
) -> None:
    big = bytes(range(256)) * (3 * 1024 * 1024 // 256 + 7)  # > 3 MB, NATS max_payload is 1 MB
    async with fresh_store(nats_trio, 3) as (store, stream):
        await store.save_checkpoint("status", 10, big)
        reader = open_store(nats_trio.store_url(stream=stream, replicas=3))
        try:
            loaded_big = await reader.load_checkpoint("status")
            await store.save_checkpoint("status", 11, big[::-1])
            loaded_reversed = await reader.load_checkpoint("status")
            await store.save_checkpoint("status", 12, b"small")
            loaded_small = await reader.load_checkpoint("status")
        finally:
            await reader.close()

    assert loaded_big == (10, big)
    assert loaded_reversed == (11, big[::-1])
    assert loaded_small == (12, b"small")


async def test_existing_stream_without_per_subject_limits_is_refused(
    nats_single: NatsCluster,
) -> None:
    stream = unique_stream_name()
    nc = await nats.connect(nats_single.nodes[0].url)
    try:
        await nc.jetstream().add_stream(
            StreamConfig(name=stream, subjects=[f"{stream}.ev.>"], allow_direct=True)
        )
        store = open_store(nats_single.store_url(stream=stream))
        try:
            with pytest.raises(StoreError, match="max_msgs_per_subject must be 1"):
                await store.head_position()
        finally:
            await store.close()
    finally:
        await nc.close()
        await drop_stream(nats_single, stream)


async def test_unreachable_servers_fail_with_a_clear_error_within_the_connect_bound() -> None:
    settings = NatsSettings(servers=(f"nats://127.0.0.1:{free_port()}",), connect_timeout_s=0.5)
    store = NatsEventStore(settings)
    started = time.monotonic()

    with pytest.raises(StoreError, match="cannot connect to NATS"):
        await store.head_position()

    assert time.monotonic() - started < 10
    await store.close()
