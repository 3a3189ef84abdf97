"""A slow subscriber is dropped with a position to resume from, against every store URL.

One scenario, run by a real ``sidecar eventlog serve`` over SQLite, JetStream R1 and JetStream
R3: a live subscriber that stops reading falls more than ``--subscriber-buffer-events`` behind,
is ended with RESOURCE_EXHAUSTED and a resume position, and a new subscription from there gets
the rest exactly (no gap, no repeat). On JetStream two servers share the stream: the subscriber
is dropped by one (its live part from an ordered consumer) and resumes through the other.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from sidecar.eventlog.settings import RESUME_METADATA_KEY
from sidecar.v1 import eventlog_pb2, eventlog_pb2_grpc
from tests.integration.eventlog._server import EventLogProcess
from tests.integration.nats.helpers import NatsEventLogProcess, drop_stream
from tests.support.events import StreamFactory, to_proto
from tests.support.nats import nats_single, nats_trio, unique_stream_name

__all__ = ["nats_single", "nats_trio"]  # the JetStream fixtures this module's cases use

pytestmark = pytest.mark.integration

RECEIVE_TIMEOUT_S = 60.0
"""Generous bound for each read and for the resumed subscription; only a hang exceeds it."""
SERVER_ARGS = ("--subscriber-buffer-events", "50")
BURSTS, BURST_EVENTS = 30, 100
"""What is appended while the subscriber reads nothing: far beyond its buffer."""

STORES = {
    "sqlite": None,
    "jetstream-r1": ("nats_single", 1),
    "jetstream-r3": ("nats_trio", 3),
}
"""Store under test → None (SQLite: one server) or (cluster fixture, replicas)."""


@contextlib.asynccontextmanager
async def _servers(
    request: pytest.FixtureRequest, store: str, workdir: Path
) -> AsyncIterator[tuple[EventLogProcess, EventLogProcess]]:
    """(where the subscriber is dropped, where it resumes and events are appended)."""
    where = STORES[store]
    if where is None:
        with EventLogProcess(workdir, *SERVER_ARGS) as server:
            yield server, server
        return
    cluster_fixture, replicas = where
    cluster = request.getfixturevalue(cluster_fixture)
    stream = unique_stream_name()
    url = cluster.store_url(stream=stream, replicas=replicas)
    (workdir / "writer").mkdir()
    (workdir / "reader").mkdir()
    try:
        with NatsEventLogProcess(workdir / "writer", url, *SERVER_ARGS) as writer, \
                NatsEventLogProcess(workdir / "reader", url, *SERVER_ARGS) as reader:
            yield reader, writer
    finally:
        await drop_stream(cluster, stream)


async def _append(stub: eventlog_pb2_grpc.EventLogStub, events: list[object]) -> None:
    await stub.Append(
        eventlog_pb2.AppendRequest(events=[to_proto(e) for e in events]),  # type: ignore[arg-type]
        timeout=30,
    )


@pytest.mark.parametrize("store", list(STORES))
async def test_a_slow_live_subscriber_is_dropped_with_a_position_that_resumes_exactly(
    store: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    last = 1 + BURSTS * BURST_EVENTS
    # A small HTTP/2 window so that a client that stops reading really pushes back.
    options = [("grpc.http2.lookahead_bytes", 16384), ("grpc.http2.bdp_probe", 0)]
    async with _servers(request, store, tmp_path) as (reader, writer), \
            grpc.aio.insecure_channel(writer.address) as to_writer, \
            grpc.aio.insecure_channel(reader.address, options=options) as to_reader:
        writer_stub = eventlog_pb2_grpc.EventLogStub(to_writer)
        producer = StreamFactory(f"slow{store.replace('-', '')}", "pod-1")
        await _append(writer_stub, producer.transitions(1))
        call = eventlog_pb2_grpc.EventLogStub(to_reader).Subscribe(
            eventlog_pb2.SubscribeRequest(from_position=1)
        )
        first = await asyncio.wait_for(call.read(), RECEIVE_TIMEOUT_S)
        assert first.event.global_position == 1
        for _ in range(BURSTS):  # live now; the subscriber reads nothing meanwhile
            await _append(writer_stub, producer.transitions(BURST_EVENTS))

        received = [first.event.global_position]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            while True:
                message = await asyncio.wait_for(call.read(), RECEIVE_TIMEOUT_S)
                if message is grpc.aio.EOF:
                    break
                if message.WhichOneof("message") == "event":
                    received.append(message.event.global_position)
            await call  # raises the final status
        error = caught.value
        resume = int(dict(error.trailing_metadata() or ())[RESUME_METADATA_KEY])

        resumed = writer_stub.Subscribe(eventlog_pb2.SubscribeRequest(from_position=resume))
        rest: list[int] = []
        async with asyncio.timeout(RECEIVE_TIMEOUT_S):
            async for message in resumed:
                if message.WhichOneof("message") == "event":
                    rest.append(message.event.global_position)
                    if rest[-1] == last:
                        break
        resumed.cancel()

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"resume from position {resume}" in (error.details() or "")
    assert received == list(range(1, len(received) + 1))
    assert resume == received[-1] + 1
    assert received + rest == list(range(1, last + 1))
