"""Helpers shared by the JetStream adapter's integration tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import nats
import nats.errors

from sidecar.eventlog.store import EventStore
from sidecar.eventlog.stores import open_store
from tests.support.nats import NatsCluster, unique_stream_name


async def drop_stream(cluster: NatsCluster, stream: str) -> None:
    """Delete a test's JetStream stream and checkpoint bucket (long-lived servers stay lean)."""
    nc = await nats.connect(servers=[n.url for n in cluster.nodes if n.running])
    try:
        js = nc.jetstream()
        with contextlib.suppress(nats.errors.Error):
            await js.delete_stream(stream)
        with contextlib.suppress(nats.errors.Error):
            await js.delete_key_value(f"{stream}_CHECKPOINTS")
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def fresh_store(cluster: NatsCluster, replicas: int, **query: str | float
                      ) -> AsyncIterator[tuple[EventStore, str]]:
    """An empty store on its own JetStream stream; closed and deleted afterwards."""
    stream = unique_stream_name()
    store = open_store(cluster.store_url(stream=stream, replicas=replicas, **query))
    try:
        yield store, stream
    finally:
        await store.close()
        await drop_stream(cluster, stream)
