"""Two ``sidecar eventlog serve --store nats://...`` processes on one JetStream cluster.

The event log server keeps nothing on local disk when its store is JetStream, so replicas
are interchangeable: what is appended through one is read, and folded into the breaker
projections, by the other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.v1 import eventlog_pb2
from tests.integration.eventlog._server import EventLogProcess
from tests.integration.nats.helpers import NatsEventLogProcess, drop_stream
from tests.support.events import StreamFactory
from tests.support.nats import NatsCluster, unique_stream_name

pytestmark = pytest.mark.integration

FOLD_BOUND_S = 20.0
"""Generous bound for a server's projections to fold the head; only a hang exceeds it."""


@pytest.fixture
def two_servers(nats_trio: NatsCluster, tmp_path: Path
                ) -> Iterator[tuple[NatsEventLogProcess, NatsEventLogProcess]]:
    stream = unique_stream_name()
    url = nats_trio.store_url(stream=stream, replicas=3)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        with NatsEventLogProcess(tmp_path / "a", url) as a, \
                NatsEventLogProcess(tmp_path / "b", url) as b:
            yield a, b
    finally:
        asyncio.run(drop_stream(nats_trio, stream))


def _read_all(server: EventLogProcess) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    position = 1
    while True:
        page = server.stub.ReadAll(
            eventlog_pb2.ReadAllRequest(from_position=position, limit=7), timeout=10.0
        )
        found.extend((e.global_position, e.event_id) for e in page.events)
        if not page.events:
            return found
        position = page.next_position


def _folded_status(server: EventLogProcess, head: int) -> eventlog_pb2.ListBreakerStatusResponse:
    deadline = time.monotonic() + FOLD_BOUND_S
    while True:
        listed = server.stub.ListBreakerStatus(eventlog_pb2.ListBreakerStatusRequest(), timeout=10)
        if listed.projection_position >= head:
            return listed
        assert time.monotonic() < deadline, f"projections stuck at {listed.projection_position}"
        time.sleep(0.05)


def test_appends_through_either_server_are_read_and_projected_alike_by_both(
    two_servers: tuple[NatsEventLogProcess, NatsEventLogProcess],
) -> None:
    a, b = two_servers
    pod1, pod2 = StreamFactory("checkout", "pod-1"), StreamFactory("checkout", "pod-2")
    billing = StreamFactory("billing", "pod-1")
    appended = []
    for server, events in [
        (a, pod1.transitions(6, "payments")),
        (b, pod2.transitions(3, "payments")),
        (a, billing.transitions(4, "ledger")),  # ends OPEN
        (b, pod1.transitions(3, "stock")),
    ]:
        reply = server.append(events)
        appended.extend((r.global_position, r.event_id) for r in reply.results)
    head = max(position for position, _ in appended)

    read_through_b = _read_all(b)
    read_through_a = _read_all(a)
    status_a = _folded_status(a, head)
    status_b = _folded_status(b, head)

    assert read_through_b == sorted(appended) == read_through_a
    assert [p for p, _ in read_through_b] == list(range(1, head + 1))
    assert status_a.head_position == status_b.head_position == head

    def comparable(listed: eventlog_pb2.ListBreakerStatusResponse) -> list[tuple[object, ...]]:
        # seconds_open of an OPEN breaker grows with each server's clock: compare the rest.
        return [
            (s.service, s.upstream, s.state, s.instances_open, s.instances_known,
             s.transitions, s.recoveries, [(c.from_state, c.to_state, c.count)
                                           for c in s.transition_counts])
            for s in listed.breakers
        ]

    assert comparable(status_a) == comparable(status_b)
    assert {(s.service, s.upstream) for s in status_b.breakers} == {
        ("checkout", "payments"), ("checkout", "stock"), ("billing", "ledger")
    }
    payments_b = next(s for s in status_b.breakers if s.upstream == "payments")
    assert (payments_b.instances_known, payments_b.transitions) == (2, 9)
