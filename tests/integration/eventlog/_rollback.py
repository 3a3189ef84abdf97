"""The rollback scenario shared by the SQLite and the JetStream tests: two sidecars in this
process (real recorder, queue, writer, outbox, shipper) trip breakers every 20 ms against a real
``sidecar eventlog serve``; the log is rolled back (``restore``) while the server is down; the
sidecars must detect it, re-ship, and leave the log whole (``verify --against`` the heads saved
before the rollback fails before the repair and passes after)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sidecar.breaker import State
from sidecar.events.outbox import Outbox, OutboxWriter
from sidecar.events.producer import EventQueue, EventRecorder
from sidecar.events.settings import EventsSettings
from sidecar.events.shipper import GrpcEventExporter, Shipper
from sidecar.ids import uuid7
from sidecar.v1 import eventlog_pb2
from tests.integration.eventlog._server import EventLogProcess
from tests.support.procs import SIDECAR_BIN
from tests.unit.events._support import transition

SETTINGS = dict(batch_size=50, linger_ms=0.0, flush_interval_ms=100.0, append_timeout_ms=2_000.0,
                backoff_base_ms=50.0, backoff_max_ms=300.0)
WAIT_S = 30.0


class _Sidecar:
    """Recorder -> queue -> writer -> outbox -> shipper, as the proxy wires them."""

    def __init__(self, tmp_path: Path, instance: str, address: str) -> None:
        self.stream = f"checkout/{instance}"
        self.ids: list[str] = []
        self.queue = EventQueue(10_000)
        self.recorder = EventRecorder("checkout", instance, self.queue, ids=self._id)
        settings = EventsSettings(outbox_path=str(tmp_path / f"{instance}.db"), **SETTINGS)
        self.outbox = Outbox(settings.outbox_path, max_events=100_000)
        self.shipper = Shipper(self.outbox, GrpcEventExporter(address), settings)
        self.writer = OutboxWriter(self.queue, self.outbox, batch_size=50,
                                   on_written=self.shipper.wake, poll_s=0.05)
        self.shipper.start()
        self.writer.start()

    def _id(self) -> str:
        event_id = uuid7()
        self.ids.append(event_id)
        return event_id

    def trip(self, n: int) -> None:
        to_state = State.OPEN if n % 2 == 0 else State.CLOSED
        from_state = State.CLOSED if to_state is State.OPEN else State.OPEN
        self.recorder.on_transition(transition(from_state=from_state, to_state=to_state))

    def close(self) -> None:
        self.writer.stop(5.0)
        self.shipper.stop(5.0)
        self.outbox.close()


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SIDECAR_BIN, "eventlog", *args], capture_output=True, text=True,
                          timeout=60, check=False)


def _read_stream(server: EventLogProcess, stream: str) -> list[eventlog_pb2.ReadStreamResponse]:
    events = []
    version = 1
    while True:
        page = server.stub.ReadStream(
            eventlog_pb2.ReadStreamRequest(stream=stream, from_version=version, limit=1000),
            timeout=10.0, metadata=server.metadata())
        if not page.events:
            return events
        events.extend(page.events)
        version = int(page.events[-1].version) + 1


def rollback_scenario(tmp_path: Path, server: EventLogProcess,
                      take_copy: Callable[[], None], restore: Callable[[], None],
                      store_url: str | None = None) -> None:
    """Traffic, ``take_copy()`` of the live log, more traffic, server down, heads saved,
    ``restore()``, server up: both sidecars detect it and make the log whole. ``store_url``:
    the server's store for the offline ``heads``/``verify`` (default: its SQLite file)."""
    url = store_url or server.store_url
    sidecars = [_Sidecar(tmp_path, f"pod-{n}", server.address) for n in (1, 2)]
    stop = threading.Event()

    def produce() -> None:
        n = 0
        while not stop.is_set():
            for sidecar in sidecars:
                sidecar.trip(n)
            n += 1
            stop.wait(0.02)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    heads_file = tmp_path / "heads.jsonl"
    try:
        _until(lambda: server.head() >= 20, "the first events")
        take_copy()
        at_copy = server.head()
        _until(lambda: server.head() >= at_copy + 40, "events after the copy")
        server.kill()
        heads = _cli("heads", "--store", url)
        assert heads.returncode == 0, heads.stderr
        heads_file.write_text(heads.stdout)
        restore()
        behind = _cli("verify", "--store", url, "--against", str(heads_file))
        assert behind.returncode == 1, behind.stdout + behind.stderr
        server.restart()
        _until(lambda: all(s.shipper.stats().rollbacks >= 1 for s in sidecars),
               "both sidecars to detect the rollback")
        stop.set()
        producer.join(5.0)
        _until(lambda: all(s.outbox.stats().pending == 0 and s.queue.depth() == 0
                           for s in sidecars), "the outboxes to drain")
        for sidecar in sidecars:
            stored = _read_stream(server, sidecar.stream)
            assert [int(e.version) for e in stored] == list(range(1, len(stored) + 1))
            stored_ids = [e.event_id for e in stored]
            assert len(set(stored_ids)) == len(stored_ids)
            assert set(sidecar.ids) <= set(stored_ids)  # nothing the sidecar recorded is lost
            rollbacks = [e.log_rollback_detected for e in stored
                         if e.type == "LogRollbackDetected"]
            assert len(rollbacks) == sidecar.shipper.stats().rollbacks == 1
            assert rollbacks[0].reason == "head_behind" and rollbacks[0].lost == 0
            assert rollbacks[0].reshipped > 0
            assert rollbacks[0].found_version < rollbacks[0].acknowledged_version
    finally:
        stop.set()
        for sidecar in sidecars:
            sidecar.close()
    server.kill()
    whole = _cli("verify", "--store", url, "--against", str(heads_file))
    assert whole.returncode == 0, whole.stdout + whole.stderr
