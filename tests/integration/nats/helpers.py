"""Helpers shared by the JetStream adapter's integration tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import nats.errors

from sidecar.eventlog.port import EventStore, open_store
from tests.integration.eventlog._server import EventLogProcess
from tests.support.nats import NatsCluster, unique_stream_name


class NatsEventLogProcess(EventLogProcess):
    """The shared server harness, with a ``nats://`` store instead of a SQLite file."""

    def __init__(self, workdir: Path, store_url: str, *extra_args: str) -> None:
        self._nats_store_url = store_url
        super().__init__(workdir, *extra_args)

    def args(self) -> list[str]:
        args = super().args()
        args[args.index("--store") + 1] = self._nats_store_url
        return args


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
