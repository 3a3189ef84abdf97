"""Faults on a three-node JetStream cluster holding the log with three replicas (R3).

One scenario, run once for this module (``failover``), then checked from several angles:

1. producers append continuously (several streams, concurrent batches);
2. the node leading the stream's Raft group is SIGKILLed mid-append;
3. producers keep going on the two surviving nodes (an append that failed is retried as is:
   appends are idempotent);
4. the killed node is restarted and must catch up with the log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from sidecar import chain
from sidecar.eventlog.port import (
    AppendOutcome,
    EventStore,
    NewEvent,
    StoredEvent,
    StoreError,
    open_store,
)
from tests.contract.store_contract import read_everything
from tests.support.events import StreamFactory
from tests.support.nats import NatsCluster, unique_stream_name

pytestmark = pytest.mark.integration

PRODUCERS = 3
BATCH_EVENTS = 20
BATCHES_BEFORE_KILL = 5
"""Acknowledged batches (all producers together) before the leader is killed."""
BATCHES_WITH_TWO_NODES = 15
"""Acknowledged batches required after the kill, while only two nodes run."""
PHASE_BOUND_S = 60.0
"""Generous bound per phase; only a hang or a lost quorum exceeds it."""
REQUEST_TIMEOUT_S = 2.0


@dataclass
class Failover:
    """What the scenario observed."""

    acked: list[tuple[NewEvent, AppendOutcome]] = field(default_factory=list)
    acked_batches_at_kill: int = 0
    acked_batches_after_kill: int = 0
    failed_attempts: int = 0
    killed: str = ""
    new_leader: str = ""
    stored_after_failover: list[StoredEvent] = field(default_factory=list)
    head_after_restart: int = 0
    killed_node_state: dict[str, Any] = field(default_factory=dict)
    killed_node_lag_s: float = 0.0


class Producers:
    """``PRODUCERS`` sidecars appending batches; a failed batch is retried unchanged."""

    def __init__(self, store: EventStore, record: Failover) -> None:
        self.store = store
        self.record = record
        self.acked_batches = 0
        self.stop = asyncio.Event()
        self.progress = asyncio.Condition()

    async def run_one(self, number: int) -> None:
        producer = StreamFactory("checkout", f"pod-{number}")
        while not self.stop.is_set():
            batch = producer.transitions(BATCH_EVENTS)
            while True:
                try:
                    outcomes = await self.store.append(batch)
                    break
                except StoreError:
                    self.record.failed_attempts += 1
                    await asyncio.sleep(0.05)
            self.record.acked.extend(zip(batch, outcomes, strict=True))
            async with self.progress:
                self.acked_batches += 1
                self.progress.notify_all()

    async def wait_for(self, batches: int) -> None:
        async with self.progress:
            await asyncio.wait_for(
                self.progress.wait_for(lambda: self.acked_batches >= batches), PHASE_BOUND_S
            )


async def _scenario(cluster: NatsCluster) -> Failover:
    record = Failover()
    stream = unique_stream_name()
    store = open_store(
        cluster.store_url(stream=stream, replicas=3, request_timeout_s=REQUEST_TIMEOUT_S)
    )
    try:
        producers = Producers(store, record)
        tasks = [asyncio.create_task(producers.run_one(n)) for n in range(PRODUCERS)]
        await producers.wait_for(BATCHES_BEFORE_KILL)

        leader = await asyncio.to_thread(cluster.stream_leader, stream)
        leader.kill()  # SIGKILL while the producers are mid-append
        record.killed = leader.name
        record.acked_batches_at_kill = producers.acked_batches

        await producers.wait_for(record.acked_batches_at_kill + BATCHES_WITH_TWO_NODES)
        producers.stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), PHASE_BOUND_S)
        record.acked_batches_after_kill = producers.acked_batches - record.acked_batches_at_kill
        record.new_leader = (await asyncio.to_thread(cluster.stream_leader, stream)).name
        # Read through a fresh adapter: what the cluster holds, not what the writer remembers.
        reader = open_store(cluster.store_url(stream=stream, replicas=3, recent_events=0))
        try:
            record.stored_after_failover = await read_everything(reader, page=1000)
        finally:
            await reader.close()

        await asyncio.to_thread(leader.start)
        await asyncio.to_thread(cluster.wait_ready)
        record.head_after_restart = await store.head_position()
        started = time.monotonic()
        while True:
            state = await asyncio.to_thread(leader.stream_state, stream) or {}
            if state.get("last_seq") == record.head_after_restart:
                break
            if time.monotonic() - started > PHASE_BOUND_S:
                break
            await asyncio.sleep(0.1)
        record.killed_node_state = state
        record.killed_node_lag_s = time.monotonic() - started
    finally:
        await store.close()
    return record


@pytest.fixture(scope="module")
def failover(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Failover]:
    with NatsCluster(tmp_path_factory.mktemp("nats-faults"), size=3) as cluster:
        yield asyncio.run(_scenario(cluster))


def test_no_acknowledged_event_is_lost_when_the_stream_leader_is_sigkilled(
    failover: Failover,
) -> None:
    stored = {e.event_id: e for e in failover.stored_after_failover}

    missing = [event.event_id for event, _ in failover.acked if event.event_id not in stored]
    moved = [
        (outcome.global_position, stored[event.event_id].global_position)
        for event, outcome in failover.acked
        if event.event_id in stored
        and stored[event.event_id].global_position != outcome.global_position
    ]

    assert failover.acked_batches_at_kill >= BATCHES_BEFORE_KILL
    assert missing == []
    assert moved == []
    assert all(stored[e.event_id].as_new_event() == e for e, _ in failover.acked)


def test_appends_keep_succeeding_with_two_of_three_nodes(failover: Failover) -> None:
    assert failover.acked_batches_after_kill >= BATCHES_WITH_TWO_NODES
    assert failover.new_leader and failover.new_leader != failover.killed


def test_the_log_stays_gap_free_with_whole_chains_after_the_failover(failover: Failover) -> None:
    log = failover.stored_after_failover
    assert [e.global_position for e in log] == list(range(1, len(log) + 1))
    assert len(log) == len(failover.acked)  # nothing stored twice, nothing unacknowledged
    heads: dict[str, tuple[int, bytes]] = {}
    for event in log:
        version, prev = heads.get(event.stream, (0, chain.GENESIS_HASH))
        assert (event.version, event.prev_hash) == (version + 1, prev)
        assert chain.hash_of(event) == event.hash
        heads[event.stream] = (event.version, event.hash)


def test_the_killed_node_restarts_rejoins_and_catches_up(failover: Failover) -> None:
    state = failover.killed_node_state

    assert state.get("last_seq") == failover.head_after_restart, (
        f"{failover.killed} still at {state} after {failover.killed_node_lag_s:.1f}s"
    )
    assert state.get("messages") == failover.head_after_restart
    assert state.get("first_seq") == 1
