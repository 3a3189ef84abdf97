"""Durability: a SIGKILLed server loses no acknowledged append; SIGTERM stops it cleanly."""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path

import grpc
import pytest

from sidecar.eventlog.port import NewEvent
from sidecar.eventlog.settings import RESUME_METADATA_KEY
from sidecar.v1 import eventlog_pb2, eventlog_pb2_grpc
from tests.integration.eventlog._server import EventLogProcess
from tests.support.events import StreamFactory, to_proto
from tests.support.procs import SIDECAR_BIN

pytestmark = pytest.mark.integration

PRODUCERS = 3
BATCH_EVENTS = 20
KILL_AFTER_ACKED_EVENTS = 600


class Producer(threading.Thread):
    """Appends chained batches of its own stream until the server goes away."""

    def __init__(self, index: int, address: str) -> None:
        super().__init__(daemon=True)
        self.factory = StreamFactory("crash", f"pod-{index}")
        self.address = address
        self.acked: dict[str, int] = {}  # event_id -> acknowledged global position
        self.in_flight: list[NewEvent] = []
        self.failure: grpc.RpcError | None = None

    def run(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = eventlog_pb2_grpc.EventLogStub(channel)
            while True:
                self.in_flight = self.factory.transitions(BATCH_EVENTS)
                request = eventlog_pb2.AppendRequest(events=[to_proto(e) for e in self.in_flight])
                try:
                    reply = stub.Append(request, timeout=10)
                except grpc.RpcError as exc:
                    self.failure = exc
                    return
                for result in reply.results:
                    self.acked[result.event_id] = result.global_position
                self.in_flight = []


def test_sigkill_during_appends_loses_no_acknowledged_event(tmp_path: Path) -> None:
    server = EventLogProcess(tmp_path)
    try:
        producers = [Producer(i, server.address) for i in range(PRODUCERS)]
        for producer in producers:
            producer.start()
        acked = threading.Event()

        def watch() -> None:
            while sum(len(p.acked) for p in producers) < KILL_AFTER_ACKED_EVENTS:
                if any(p.failure for p in producers):
                    return
                threading.Event().wait(0.005)
            acked.set()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        assert acked.wait(60), f"producers stalled:\n{server.output()}"
        server.kill()  # SIGKILL to the whole process group, appends in flight
        for producer in producers:
            producer.join(15)
        assert all(p.failure is not None for p in producers)
        assert any(p.in_flight for p in producers), "the kill hit no append in flight"

        server.restart()
        stored = {}
        position = 1
        while True:
            page = server.stub.ReadAll(
                eventlog_pb2.ReadAllRequest(from_position=position, limit=1000), timeout=10
            )
            stored.update({e.event_id: e.global_position for e in page.events})
            if not page.events:
                break
            position = page.next_position
        acknowledged = {k: v for p in producers for k, v in p.acked.items()}
        missing = {k: v for k, v in acknowledged.items() if stored.get(k) != v}
        assert not missing, f"{len(missing)} acknowledged events lost or moved"

        # The batches cut off by the crash were atomic: a retry stores all or finds all.
        for producer in producers:
            if producer.in_flight:
                retry = server.append(producer.in_flight)
                assert len({r.duplicate for r in retry.results}) == 1

        verify = subprocess.run(
            [SIDECAR_BIN, "eventlog", "verify", "--store", server.store_url],
            capture_output=True, text=True, timeout=60,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert verify.stdout.startswith("ok: ")
    finally:
        server.close()


def test_sigterm_ends_subscriptions_with_a_resume_position_and_exits_zero(
    tmp_path: Path,
) -> None:
    # A grace period far longer than the wait below: exiting in time proves that open
    # subscriptions were ended, not waited out.
    server = EventLogProcess(tmp_path, "--shutdown-grace-s", "60")
    try:
        server.append(StreamFactory("shutdown", "pod-1").transitions(3))
        stream = server.stub.Subscribe(eventlog_pb2.SubscribeRequest(from_position=1))
        received = [next(stream).event.global_position for _ in range(3)]
        assert server.proc is not None
        server.proc.signal(signal.SIGTERM)
        with pytest.raises(grpc.RpcError) as ended:
            for _ in stream:
                pass
        code = server.proc.wait(20)
        output = server.output()
    finally:
        server.close()

    assert received == [1, 2, 3]
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down; resume from position 4" in ended.value.details()
    assert dict(ended.value.trailing_metadata())[RESUME_METADATA_KEY] == "4"
    assert code == 0, output
    assert "stopping" in output
