"""A JetStream node lost while a sidecar ships breaker events to an event log on a three-node
cluster (stream with three replicas), end to end with real processes: three nats-server nodes,
``sidecar eventlog serve --store nats://...``, ``sidecar proxy`` with a flapping breaker.

The stream's leader is killed with SIGKILL mid-stream, the breakers keep changing state while
two nodes carry the log, then the node starts again and rejoins. Every breaker event must be in
the log exactly once, and the audit (Verify) must pass.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.v1 import eventlog_pb2
from tests.chaos._support import report
from tests.integration.eventlog._server import EventLogProcess
from tests.integration.events._support import (
    CallLoop,
    drained,
    query_events,
    sample,
    sidecar_config,
    transitions,
    wait_until,
)
from tests.support.nats import NatsCluster, unique_stream_name
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

DOWN_S = 10.0
"""How long the cluster runs on two nodes while events keep coming."""
DRAIN_TIMEOUT_S = 60.0


class _NatsEventLog(EventLogProcess):
    """The event log server harness with a ``nats://`` store instead of a SQLite file."""

    def __init__(self, workdir: Path, store_url: str) -> None:
        self._store_url = store_url
        super().__init__(workdir)

    def args(self) -> list[str]:
        args = super().args()
        args[args.index("--store") + 1] = self._store_url
        return args


@pytest.fixture
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamProcess]:
    with UpstreamProcess(tmp_path_factory.mktemp("upstream")) as process:
        process.configure("flap.Svc", code="UNAVAILABLE", failure_ratio=0.5)
        yield process


def test_a_jetstream_node_killed_during_appends_loses_and_duplicates_no_event(
        tmp_path: Path, upstream: UpstreamProcess) -> None:
    stream = unique_stream_name("CHAOS")
    (tmp_path / "log").mkdir()
    with NatsCluster(tmp_path / "nats", size=3) as cluster, _NatsEventLog(
            tmp_path / "log", cluster.store_url(stream=stream, replicas=3)) as log:
        config = sidecar_config(upstream.address, log.address, tmp_path / "outbox.db")
        with SidecarProcess(tmp_path, config) as sidecar:
            with CallLoop(sidecar):
                wait_until(lambda: sample(sidecar, "sidecar_events_shipped_total") >= 20,
                           "first events shipped")
                leader = cluster.stream_leader(stream)
                shipped_at_kill = sample(sidecar, "sidecar_events_shipped_total")
                leader.kill()
                killed_at = time.monotonic()
                time.sleep(DOWN_S)
                shipped_two_nodes = (sample(sidecar, "sidecar_events_shipped_total")
                                     - shipped_at_kill)
                new_leader = cluster.stream_leader(stream).name
                leader.start()
                cluster.wait_ready()
                rejoined_s = time.monotonic() - killed_at
                time.sleep(2.0)  # more events with the node back
            wait_until(lambda: drained(sidecar), "outbox drained", timeout_s=DRAIN_TIMEOUT_S)
            counted = transitions(sidecar)
            failures = {code: int(sample(sidecar, "sidecar_events_ship_failures_total",
                                         code=code))
                        for code in ("UNAVAILABLE", "DEADLINE_EXCEEDED")}
        ids = [e["event_id"] for e in query_events(log.address, "--type", "BreakerTransitioned")]
        verify = log.stub.Verify(eventlog_pb2.VerifyRequest(), timeout=60)
        head = log.head()
        killed_state = leader.stream_state(stream) or {}

    report("jetstream-node-loss", killed=leader.name, new_leader=new_leader,
           transitions_counted=counted, transitions_in_log=len(ids), distinct_ids=len(set(ids)),
           shipped_while_two_nodes=int(shipped_two_nodes), ship_failures=failures,
           rejoined_after_s=round(rejoined_s, 1), log_head=head,
           killed_node_last_seq=killed_state.get("last_seq"), verify_ok=verify.ok)
    assert new_leader != leader.name
    assert shipped_two_nodes > 0, "the log kept accepting appends on two of three nodes"
    assert counted >= 50
    assert len(ids) == counted, f"log has {len(ids)} transitions, the sidecar counted {counted}"
    assert len(set(ids)) == len(ids), "an event was stored twice"
    assert verify.ok, verify
