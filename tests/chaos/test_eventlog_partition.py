"""Chaos between the sidecar and the event log: a fault-injecting TCP proxy in the test cuts the
sidecar off for 30 s while its breakers keep changing state, in three 10 s phases:

1. delay: every byte on the shipper's open connection arrives 1.5 s late, longer than its 1 s
   Append deadline, so Appends time out at the sidecar *after* the log has stored them, and
   are retried: the log must answer each retry as a duplicate and store nothing twice;
2. reset: every connection is reset with a TCP RST, new ones too;
3. drop: a black hole. New connections are accepted and never answered.

(A black hole that swallows the shipper's *open* connection is its own test below.)

Then the network heals. Every breaker event must arrive exactly once: the event ids in the log
equal the sidecar's own transition count, none twice, and the audit passes.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.chaos._support import report
from tests.integration.eventlog._server import EventLogProcess
from tests.integration.events._support import (
    CallLoop,
    drained,
    query_events,
    sample,
    sidecar_config,
    transitions,
    verify_store,
    wait_until,
)
from tests.support.faultproxy import FaultProxy
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

PHASE_S = 10.0
"""Each of the three faults lasts this long: 30 s cut off in all."""
DELAY_MS = 1500
APPEND_TIMEOUT_MS = 1000
"""The shipper's Append deadline: shorter than DELAY_MS, so delayed Appends are retried."""
HEAL_TIMEOUT_S = 60.0
"""How long the outbox may take to drain after the network heals."""


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamProcess]:
    with UpstreamProcess(tmp_path_factory.mktemp("upstream")) as process:
        process.configure("flap.Svc", code="UNAVAILABLE", failure_ratio=0.5)
        yield process


def _eventlog_counter(log: EventLogProcess, name: str) -> float:
    text = urllib.request.urlopen(log.metrics_url, timeout=5).read().decode()
    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples if s.name == name)


def _failures(sidecar: SidecarProcess) -> dict[str, int]:
    return {code: int(sample(sidecar, "sidecar_events_ship_failures_total", code=code))
            for code in ("UNAVAILABLE", "DEADLINE_EXCEEDED")}


def test_thirty_seconds_cut_off_from_the_log_loses_and_duplicates_nothing(
        tmp_path: Path, upstream: UpstreamProcess) -> None:
    (tmp_path / "log").mkdir()
    with EventLogProcess(tmp_path / "log") as log, FaultProxy(log.port) as network:
        config = sidecar_config(upstream.address, network.address, tmp_path / "outbox.db",
                                append_timeout_ms=APPEND_TIMEOUT_MS)
        with SidecarProcess(tmp_path, config) as sidecar:
            with CallLoop(sidecar) as calls:
                wait_until(lambda: sample(sidecar, "sidecar_events_shipped_total") >= 5,
                           "first events shipped")
                phases: dict[str, dict[str, float]] = {}
                switches: list[tuple[str, Callable[[], None]]] = [
                    ("delay", lambda: network.delay(DELAY_MS)),
                    ("reset", network.reset), ("drop", network.drop)]
                for name, apply in switches:
                    apply()
                    shipped_before = sample(sidecar, "sidecar_events_shipped_total")
                    time.sleep(PHASE_S)
                    phases[name] = {
                        "shipped": sample(sidecar, "sidecar_events_shipped_total")
                        - shipped_before,
                        "pending": sample(sidecar, "sidecar_outbox_pending_events"),
                    }
                network.pass_through()
                healed_at = time.monotonic()
                wait_until(lambda: sample(sidecar, "sidecar_outbox_pending_events") < 20,
                           "the backlog ships after the network heals, breakers still flapping",
                           timeout_s=HEAL_TIMEOUT_S)
            wait_until(lambda: drained(sidecar), "outbox drained", timeout_s=HEAL_TIMEOUT_S)
            drained_s = time.monotonic() - healed_at
            counted = transitions(sidecar)
            failures = _failures(sidecar)
            host_codes = {code.name: n for code, n in calls.codes.items()}
        ids = [e["event_id"] for e in query_events(log.address, "--type", "BreakerTransitioned")]
        duplicates_refused = _eventlog_counter(log, "eventlog_duplicates_total")
        stats = network.stats()
    verify = verify_store(log.db)

    report("eventlog-partition", cut_off_s=3 * PHASE_S, transitions_counted=counted,
           transitions_in_log=len(ids), distinct_ids=len(set(ids)),
           duplicate_appends_refused_by_log=int(duplicates_refused), ship_failures=failures,
           phases=phases, drained_after_heal_s=round(drained_s, 1), host_codes=host_codes,
           proxy_connections=stats.connections_accepted, proxy_resets=stats.connections_reset,
           proxy_black_holed=stats.connections_black_holed, bytes_dropped=stats.bytes_dropped)
    assert counted >= 100, "breakers kept changing state during the partition"
    assert len(ids) == counted, f"log has {len(ids)} transitions, the sidecar counted {counted}"
    assert len(set(ids)) == len(ids), "an event was stored twice"
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert phases["reset"]["shipped"] == 0 and phases["drop"]["shipped"] == 0
    assert sum(failures.values()) > 0
    assert duplicates_refused > 0, "delayed Appends were stored, retried and answered duplicate"


RECOVERY_S = 20.0
"""How long shipping may take to resume after the partition heals (a new connection)."""


def test_shipping_resumes_by_itself_after_a_partition_black_holed_its_open_connection(
        tmp_path: Path, upstream: UpstreamProcess) -> None:
    (tmp_path / "log").mkdir()
    with EventLogProcess(tmp_path / "log") as log, FaultProxy(log.port) as network:
        config = sidecar_config(upstream.address, network.address, tmp_path / "outbox.db",
                                append_timeout_ms=APPEND_TIMEOUT_MS)
        with SidecarProcess(tmp_path, config) as sidecar, CallLoop(sidecar):
            wait_until(lambda: sample(sidecar, "sidecar_events_shipped_total") >= 5,
                       "first events shipped")
            assert network.stats().connections_open == 1  # the shipper's connection
            network.drop()
            time.sleep(5.0)
            network.pass_through()
            healed_at = time.monotonic()
            shipped = sample(sidecar, "sidecar_events_shipped_total")
            wait_until(lambda: sample(sidecar, "sidecar_events_shipped_total") > shipped + 20,
                       "shipping resumes after the partition heals", timeout_s=RECOVERY_S)
            resumed_s = time.monotonic() - healed_at
            log_lines = sidecar.process.output()
    report("eventlog-black-hole", resumed_after_heal_s=round(resumed_s, 1),
           new_connections=log_lines.count("opening a new connection"))
    assert "opening a new connection" in log_lines  # the stale channel was replaced
