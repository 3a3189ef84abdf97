"""The JetStream stream of a real ``sidecar eventlog serve`` on a real nats-server is deleted and
recreated (empty) while two sidecars keep producing: they detect it on reconnect (head 0, behind
what was acknowledged), re-ship everything they kept, and the log is whole again:
``verify --against`` the heads saved before passes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.integration.eventlog._rollback import rollback_scenario
from tests.integration.nats.helpers import NatsEventLogProcess, drop_stream
from tests.support.nats import NatsCluster, unique_stream_name


def test_a_recreated_jetstream_stream_is_made_whole_by_the_sidecars(
        tmp_path: Path, nats_single: NatsCluster) -> None:
    stream = unique_stream_name()
    url = nats_single.store_url(stream=stream)
    try:
        with NatsEventLogProcess(tmp_path, url) as server:
            rollback_scenario(tmp_path, server, lambda: None,
                              lambda: asyncio.run(drop_stream(nats_single, stream)),
                              store_url=url)
    finally:
        asyncio.run(drop_stream(nats_single, stream))
