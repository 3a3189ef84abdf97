"""Subscribe over gRPC: catch-up then live with no gap and no duplicate, server-side filters,
heartbeats, and the limit on subscriptions. A slow subscriber, dropped with a position to resume
from, is ``test_slow_subscriber.py`` (run against every store)."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.v1 import eventlog_pb2, eventlog_pb2_grpc
from tests.integration.eventlog._server import EventLogProcess
from tests.support.events import StreamFactory, to_proto

pytestmark = pytest.mark.integration

RECEIVE_TIMEOUT_S = 30.0


async def _append(stub: eventlog_pb2_grpc.EventLogStub, events: list[object]) -> None:
    await stub.Append(
        eventlog_pb2.AppendRequest(events=[to_proto(e) for e in events]),  # type: ignore[arg-type]
        timeout=10,
    )


@pytest.fixture
async def fresh_log(tmp_path: Path) -> AsyncIterator[EventLogProcess]:
    # A buffer larger than these tests' live bursts: a loaded CI machine may pause the
    # client for a moment, and dropping slow subscribers has its own test
    # (test_slow_subscriber.py).
    server = EventLogProcess(
        tmp_path, "--heartbeat-interval-s", "0.2", "--subscriber-buffer-events", "5000"
    )
    yield server
    server.close()


async def test_catch_up_then_live_under_concurrent_appends_has_no_gap_and_no_duplicate(
    fresh_log: EventLogProcess,
) -> None:
    producers = [StreamFactory("sub", f"pod-{i}") for i in range(3)]
    async with grpc.aio.insecure_channel(fresh_log.address) as channel:
        stub = eventlog_pb2_grpc.EventLogStub(channel)
        for producer in producers:
            await _append(stub, producer.transitions(400))  # 1200 to catch up on
        live_batches = 30

        async def append_live() -> None:
            for i in range(live_batches):
                await _append(stub, producers[i % 3].transitions(20))

        call = stub.Subscribe(eventlog_pb2.SubscribeRequest(from_position=1))
        appender = asyncio.create_task(append_live())
        total = 1200 + live_batches * 20
        positions: list[int] = []
        versions: dict[str, list[int]] = {}

        async def receive() -> None:
            async for message in call:
                if message.WhichOneof("message") != "event":
                    continue
                positions.append(message.event.global_position)
                versions.setdefault(message.event.stream, []).append(message.event.version)
                if len(positions) == total:
                    return

        await asyncio.wait_for(receive(), RECEIVE_TIMEOUT_S)
        call.cancel()
        await appender

    assert positions == list(range(1, total + 1))
    for stream_versions in versions.values():
        assert stream_versions == list(range(1, len(stream_versions) + 1))


async def test_filtered_subscription_sends_only_matches_and_heartbeats_with_resume_position(
    fresh_log: EventLogProcess,
) -> None:
    wanted, other = StreamFactory("wanted", "pod-1"), StreamFactory("other", "pod-1")
    async with grpc.aio.insecure_channel(fresh_log.address) as channel:
        stub = eventlog_pb2_grpc.EventLogStub(channel)
        await _append(stub, [*other.transitions(5), *wanted.transitions(2), *other.transitions(3)])
        call = stub.Subscribe(
            eventlog_pb2.SubscribeRequest(
                filter=eventlog_pb2.EventFilter(service="wanted", types=["BreakerTransitioned"]),
                heartbeat_interval_ms=100,
            )
        )
        events, heartbeat = [], None
        async for message in call:
            if message.WhichOneof("message") == "event":
                events.append(message.event)
            elif events:
                heartbeat = message.heartbeat
                break
        call.cancel()

    assert [(e.stream, e.version) for e in events] == [("wanted/pod-1", 1), ("wanted/pod-1", 2)]
    assert heartbeat is not None
    assert heartbeat.head_position == 10
    assert heartbeat.resume_position == 11  # the trailing non-matching events were scanned


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


async def test_subscriptions_beyond_the_limit_are_refused_and_counted(tmp_path: Path) -> None:
    server = EventLogProcess(tmp_path, "--max-subscribers", "1", "--heartbeat-interval-s", "0.1")
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = eventlog_pb2_grpc.EventLogStub(channel)
            first = stub.Subscribe(eventlog_pb2.SubscribeRequest())
            heartbeat = await asyncio.wait_for(first.read(), RECEIVE_TIMEOUT_S)
            assert heartbeat.WhichOneof("message") == "heartbeat"
            second = stub.Subscribe(eventlog_pb2.SubscribeRequest())
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await asyncio.wait_for(second.read(), RECEIVE_TIMEOUT_S)
            text = await asyncio.to_thread(_scrape, server.metrics_url)
            first.cancel()
    finally:
        server.close()

    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_subscribers 1" in (caught.value.details() or "")
    gauges = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert gauges["eventlog_subscribers"] == 1
