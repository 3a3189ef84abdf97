"""Subscribe on a JetStream store: catch-up, then live from an ordered consumer, across servers.

Two ``sidecar eventlog serve --store nats://...`` processes share one R3 stream: events are
appended through one while a subscriber of the other catches up and then follows live. The
subscriber must see every position once, in order, whichever server stored it. A slow
subscriber dropped by one server and resumed through the other is
``tests/integration/eventlog/test_slow_subscriber.py`` (run against every store).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from sidecar.eventlog.port import StoredEvent, open_store
from sidecar.v1 import eventlog_pb2, eventlog_pb2_grpc
from tests.integration.nats.helpers import NatsEventLogProcess, drop_stream
from tests.support.events import StreamFactory, to_proto
from tests.support.nats import NatsCluster, unique_stream_name

pytestmark = pytest.mark.integration

RECEIVE_TIMEOUT_S = 60.0
"""Generous bound for the whole subscription; only a hang or a lost event exceeds it."""
CONSUMER_BOUND_S = 20.0
"""Generous bound for the live subscriber's consumer to show up in JetStream."""
SERVER_ARGS = ("--heartbeat-interval-s", "0.2", "--subscriber-buffer-events", "5000")


@contextlib.asynccontextmanager
async def _two_servers(
    cluster: NatsCluster, workdir: Path, *server_args: str
) -> AsyncIterator[tuple[NatsEventLogProcess, NatsEventLogProcess, str]]:
    """A writer and a reader server on one new R3 stream (deleted afterwards)."""
    stream = unique_stream_name()
    url = cluster.store_url(stream=stream, replicas=3)
    (workdir / "writer").mkdir()
    (workdir / "reader").mkdir()
    try:
        with NatsEventLogProcess(workdir / "writer", url, *server_args) as writer, \
                NatsEventLogProcess(workdir / "reader", url, *server_args) as reader:
            yield writer, reader, stream
    finally:
        await drop_stream(cluster, stream)


@pytest.fixture
async def two_servers(
    nats_trio: NatsCluster, tmp_path: Path
) -> AsyncIterator[tuple[NatsEventLogProcess, NatsEventLogProcess, str]]:
    async with _two_servers(nats_trio, tmp_path, *SERVER_ARGS) as servers:
        yield servers


async def _append(stub: eventlog_pb2_grpc.EventLogStub, events: list[object]) -> None:
    await stub.Append(
        eventlog_pb2.AppendRequest(events=[to_proto(e) for e in events]),  # type: ignore[arg-type]
        timeout=30,
    )


async def _wait_for_ordered_consumer(cluster: NatsCluster, stream: str) -> ConsumerConfig:
    """The config of the stream's ordered push consumer, once there is one."""
    nc = await nats.connect(servers=[n.url for n in cluster.nodes if n.running])
    try:
        async with asyncio.timeout(CONSUMER_BOUND_S):
            while True:
                for info in await nc.jetstream().consumers_info(stream):
                    config = info.config
                    if (config.flow_control and config.mem_storage and config.deliver_subject
                            and config.ack_policy == AckPolicy.NONE):
                        return config
                await asyncio.sleep(0.05)
    finally:
        await nc.close()


async def test_subscriber_of_one_server_gets_appends_through_another_once_in_order(
    two_servers: tuple[NatsEventLogProcess, NatsEventLogProcess, str], nats_trio: NatsCluster,
) -> None:
    writer, reader, stream = two_servers
    producers = [StreamFactory("natssub", f"pod-{i}") for i in range(3)]
    live_batches, batch_events = 30, 20
    async with grpc.aio.insecure_channel(writer.address) as to_writer, \
            grpc.aio.insecure_channel(reader.address) as to_reader:
        writer_stub = eventlog_pb2_grpc.EventLogStub(to_writer)
        for producer in producers:
            await _append(writer_stub, producer.transitions(300))  # 900 to catch up on
        total = 900 + live_batches * batch_events
        call = eventlog_pb2_grpc.EventLogStub(to_reader).Subscribe(
            eventlog_pb2.SubscribeRequest(from_position=1)
        )
        positions: list[int] = []
        versions: dict[str, list[int]] = {}
        consumers_while_live: list[ConsumerConfig] = []
        caught_up = asyncio.Event()

        async def receive() -> None:
            async for message in call:
                if message.WhichOneof("message") != "event":
                    continue
                positions.append(message.event.global_position)
                versions.setdefault(message.event.stream, []).append(message.event.version)
                if len(positions) == 900:
                    caught_up.set()
                if len(positions) == total:
                    return

        async def append_live() -> None:
            for i in range(live_batches):
                await _append(writer_stub, producers[i % 3].transitions(batch_events))
                if i == live_batches // 2:  # the subscriber is live by now
                    await asyncio.wait_for(caught_up.wait(), RECEIVE_TIMEOUT_S)
                    consumers_while_live.append(
                        await _wait_for_ordered_consumer(nats_trio, stream)
                    )

        receiver = asyncio.create_task(receive())
        await asyncio.sleep(0.05)  # the first live appends race the catch-up
        await append_live()
        await asyncio.wait_for(receiver, RECEIVE_TIMEOUT_S)
        call.cancel()

    assert positions == list(range(1, total + 1))
    for stream_versions in versions.values():
        assert stream_versions == list(range(1, len(stream_versions) + 1))
    # the live part came from a JetStream ordered consumer of the reader's server, started
    # where the catch-up stopped
    (consumer,) = consumers_while_live
    assert consumer.filter_subject == f"{stream}.ev.>"
    assert consumer.deliver_policy == DeliverPolicy.BY_START_SEQUENCE
    assert consumer.opt_start_seq is not None and 900 < consumer.opt_start_seq <= total


async def test_a_live_follower_goes_on_in_order_when_the_node_holding_its_consumer_dies(
    nats_cluster: NatsCluster,
) -> None:
    stream = unique_stream_name()
    url = nats_cluster.store_url(stream=stream, replicas=3)
    writer, reader = open_store(url), open_store(url)
    producer = StreamFactory("nodeloss", "pod-1")
    received: list[StoredEvent] = []
    try:
        await writer.append(producer.transitions(10))
        async with asyncio.timeout(RECEIVE_TIMEOUT_S), contextlib.aclosing(
            reader.follow(1, wait_s=0.2)
        ) as feed:
            async for batch in feed:
                received.extend(batch.events)
                if len(received) >= 10 and batch.live and not batch.events:
                    break  # an empty live batch: the ordered consumer is waiting for more
            consumer = await _wait_for_ordered_consumer(nats_cluster, stream)
            host = await _consumer_host(nats_cluster, stream, consumer)
            nats_cluster.node(host).kill()
            for _ in range(5):  # two nodes of three carry the log meanwhile
                await writer.append(producer.transitions(10))
            async for batch in feed:
                received.extend(batch.events)
                if len(received) >= 60:
                    break
    finally:
        await writer.close()
        await reader.close()

    assert [e.global_position for e in received] == list(range(1, 61))
    assert [e.version for e in received] == list(range(1, 61))


async def _consumer_host(cluster: NatsCluster, stream: str, config: ConsumerConfig) -> str:
    """Name of the node that holds the consumer with ``config``."""
    nc = await nats.connect(servers=[n.url for n in cluster.nodes if n.running])
    try:
        for info in await nc.jetstream().consumers_info(stream):
            if info.config.deliver_subject == config.deliver_subject:
                assert info.cluster is not None and info.cluster.leader
                return str(info.cluster.leader)
    finally:
        await nc.close()
    raise AssertionError("the consumer is gone")
