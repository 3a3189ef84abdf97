"""The store contract suite, unchanged, against JetStream: one node (R1) and three nodes (R3).

Each test gets its own JetStream stream (and checkpoint bucket) on servers shared by the
session, created through ``open_store("nats://...")`` exactly as the event log server does.
Where ``recent_events=0``, every read goes to JetStream (no answer from the adapter's memory of
its own appends); on R3 those reads may be answered by a lagging follower.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sidecar.eventlog.port import EventStore
from tests.contract.store_contract import EventStoreContract
from tests.integration.nats.helpers import fresh_store
from tests.support.nats import NatsCluster

pytestmark = pytest.mark.integration


class TestNatsEventStoreSingleNode(EventStoreContract):
    @pytest.fixture
    async def store(self, nats_single: NatsCluster) -> AsyncIterator[EventStore]:
        async with fresh_store(nats_single, replicas=1, retention=1) as (store, _):
            yield store


class TestNatsEventStoreSingleNodeReadingOnlyFromJetStream(EventStoreContract):
    @pytest.fixture
    async def store(self, nats_single: NatsCluster) -> AsyncIterator[EventStore]:
        async with fresh_store(nats_single, replicas=1, recent_events=0, retention=1) as (store, _):
            yield store


class TestNatsEventStoreThreeNodesR3(EventStoreContract):
    @pytest.fixture
    async def store(self, nats_trio: NatsCluster) -> AsyncIterator[EventStore]:
        async with fresh_store(nats_trio, replicas=3, recent_events=0, retention=1) as (store, _):
            yield store
