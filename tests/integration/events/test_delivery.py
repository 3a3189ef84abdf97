"""Breaker events from a real sidecar to a real event log, through crashes: every event arrives
exactly once (counted by event_id against the sidecar's own transition counter).

Processes: one upstream (``tests.support.upstream``), ``sidecar proxy`` and
``sidecar eventlog serve`` through the CLI; the log and the sidecar are killed with SIGKILL.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.integration.eventlog._server import EventLogProcess
from tests.integration.events._support import (
    HEALTHY,
    CallLoop,
    drained,
    query_events,
    sample,
    sidecar_config,
    transitions,
    verify_store,
    wait_until,
)
from tests.support.procs import free_port
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamProcess]:
    with UpstreamProcess(tmp_path_factory.mktemp("upstream")) as process:
        process.configure("flap.Svc", code="UNAVAILABLE", failure_ratio=0.5)
        yield process


def _pending(sidecar: SidecarProcess) -> float:
    return sample(sidecar, "sidecar_outbox_pending_events")


def _transition_ids(address: str) -> list[str]:
    return [e["event_id"] for e in query_events(address, "--type", "BreakerTransitioned")]


def test_every_event_arrives_exactly_once_after_the_log_is_killed_while_breakers_flap(
        tmp_path: Path, upstream: UpstreamProcess) -> None:
    (tmp_path / "log").mkdir()
    with EventLogProcess(tmp_path / "log") as log, SidecarProcess(
            tmp_path, sidecar_config(upstream.address, log.address,
                                     tmp_path / "outbox.db")) as sidecar:
        with CallLoop(sidecar):
            wait_until(lambda: sample(sidecar, "sidecar_events_shipped_total") >= 5,
                       "first events shipped")
            log.kill()  # SIGKILL, whatever it was doing
            wait_until(lambda: _pending(sidecar) >= 20, "events pile up in the outbox")
            log.restart()
            shipped = sample(sidecar, "sidecar_events_shipped_total")
            wait_until(lambda: sample(sidecar, "sidecar_events_shipped_total") > shipped,
                       "shipping resumes while breakers keep flapping")
        wait_until(lambda: drained(sidecar), "outbox drained")

        counted = transitions(sidecar)
        ids = _transition_ids(log.address)
        assert sample(sidecar, "sidecar_events_dropped_total", reason="queue_full") == 0
        assert sample(sidecar, "sidecar_events_ship_failures_total", code="UNAVAILABLE") > 0
    assert counted >= 40
    assert len(ids) == counted, f"log has {len(ids)} transitions, the sidecar counted {counted}"
    assert len(set(ids)) == len(ids), "an event was stored twice"


def test_events_in_the_outbox_survive_a_sidecar_killed_while_the_log_is_down(
        tmp_path: Path, upstream: UpstreamProcess) -> None:
    (tmp_path / "log").mkdir()
    config = sidecar_config(upstream.address, "127.0.0.1:1", tmp_path / "outbox.db")
    with EventLogProcess(tmp_path / "log") as log:
        config["eventlog"]["address"] = log.address
        with SidecarProcess(tmp_path, config, name="before-crash") as sidecar:
            with CallLoop(sidecar):
                wait_until(lambda: sample(sidecar, "sidecar_events_shipped_total") >= 5,
                           "first events shipped")
                log.kill()
                wait_until(lambda: _pending(sidecar) >= 20, "events pile up in the outbox")
            # the calls stopped: every transition the sidecar counted is in its outbox now
            wait_until(lambda: sample(sidecar, "sidecar_events_queued") == 0, "queue written")
            before_crash = transitions(sidecar)
            assert _pending(sidecar) >= 20
            sidecar.process.kill()  # SIGKILL with the log still down

        log.restart()
        with SidecarProcess(tmp_path, config, name="after-crash") as sidecar:
            with CallLoop(sidecar):
                wait_until(lambda: transitions(sidecar) >= 10, "more transitions")
            wait_until(lambda: drained(sidecar), "outbox drained after the restart")
            after_restart = transitions(sidecar)

        ids = _transition_ids(log.address)
        configs = query_events(log.address, "--type", "ConfigApplied")
        stream = query_events(log.address, "--instance", "pod-1")
    assert len(ids) == before_crash + after_restart
    assert len(set(ids)) == len(ids), "an event was stored twice"
    assert len(configs) == 2  # one per start
    versions = [e["version"] for e in stream]
    assert versions == list(range(1, len(stream) + 1)), "one gap-free stream across the crash"
    verify = verify_store(log.db)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_calls_are_unaffected_and_the_outbox_stays_bounded_while_the_log_is_unreachable(
        tmp_path: Path, upstream: UpstreamProcess) -> None:
    nowhere = f"127.0.0.1:{free_port()}"  # nothing ever listens here
    config = sidecar_config(upstream.address, nowhere, tmp_path / "outbox.db",
                            outbox_max_events=20)
    with SidecarProcess(tmp_path, config) as sidecar:
        with CallLoop(sidecar), CallLoop(sidecar, HEALTHY) as healthy:
            wait_until(lambda: sample(sidecar, "sidecar_events_dropped_total",
                                      reason="outbox_full") >= 20, "the outbox bound reached")
            wait_until(lambda: transitions(sidecar) >= 60, "breakers keep flapping")
        samples_pending = _pending(sidecar)
        dropped = sample(sidecar, "sidecar_events_dropped_total", reason="outbox_full")
        counted = transitions(sidecar)
        failures = sample(sidecar, "sidecar_events_ship_failures_total", code="UNAVAILABLE")
        output = sidecar.process.output()

    assert samples_pending == 20
    # + the events at start: one EndpointsChanged per upstream (its first set), ConfigApplied
    at_start = len(config["upstreams"]) + 1
    assert dropped == counted + at_start - 20
    assert failures > 0
    assert "is full" in output  # refused loudly, not silently
    assert set(healthy.codes) == {grpc.StatusCode.OK}  # not one healthy call failed
    assert healthy.codes[grpc.StatusCode.OK] > 20


def test_a_sidecar_whose_outbox_was_deleted_continues_the_logs_chain(
        tmp_path: Path, upstream: UpstreamProcess) -> None:
    (tmp_path / "log").mkdir()
    outbox = tmp_path / "outbox.db"
    with EventLogProcess(tmp_path / "log") as log:
        config = sidecar_config(upstream.address, log.address, outbox)
        with SidecarProcess(tmp_path, config, name="first") as sidecar:
            with CallLoop(sidecar):
                wait_until(lambda: transitions(sidecar) >= 10, "transitions")
            wait_until(lambda: drained(sidecar), "everything shipped")
        lost = list(tmp_path.glob("outbox.db*"))
        assert outbox in lost, f"no outbox to delete in {sorted(tmp_path.iterdir())}"
        for path in lost:
            path.unlink()  # the pod lost its volume

        with SidecarProcess(tmp_path, config, name="second") as sidecar:
            with CallLoop(sidecar):
                wait_until(lambda: transitions(sidecar) >= 10, "transitions")
            wait_until(lambda: drained(sidecar), "everything shipped")
            output = sidecar.process.output()
        stream = query_events(log.address, "--instance", "pod-1")
    versions = [e["version"] for e in stream]
    assert versions == list(range(1, len(stream) + 1)), "one gap-free stream, no conflict"
    assert "continues after version" in output
    verify = verify_store(log.db)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_sigterm_ships_what_is_waiting_before_the_sidecar_exits(
        tmp_path: Path, upstream: UpstreamProcess) -> None:
    (tmp_path / "log").mkdir()
    with EventLogProcess(tmp_path / "log") as log:
        # a linger far longer than the test: only the shutdown flush can ship these events
        config = sidecar_config(upstream.address, log.address, tmp_path / "outbox.db",
                                linger_ms=60_000)
        with SidecarProcess(tmp_path, config) as sidecar:
            with CallLoop(sidecar):
                wait_until(lambda: transitions(sidecar) >= 10, "transitions")
            wait_until(lambda: sample(sidecar, "sidecar_events_queued") == 0, "queue written")
            counted = transitions(sidecar)
            assert sample(sidecar, "sidecar_events_shipped_total") == 0
            sidecar.process.signal(signal.SIGTERM)
            assert sidecar.process.wait(timeout_s=15) == 0
        ids = _transition_ids(log.address)
    assert len(ids) == counted
