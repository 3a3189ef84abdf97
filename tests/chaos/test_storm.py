"""An incident storm against an event log that sheds load: dozens of simulated sidecars (real
breakers, recorder, outbox, shipper; several per process, :mod:`tests.support.storm`) trip a
dozen breakers each at one instant against ``sidecar eventlog serve --max-pending-appends 1``
(2 on JetStream).

The log must answer the excess RESOURCE_EXHAUSTED with a retry hint (counted in its
``eventlog_appends_refused_total``), the shippers must back off and deliver afterwards, and then
every recorded event id is in the log exactly once and ``sidecar eventlog verify`` exits 0. On
SQLite and on JetStream R3 (a fresh three-node cluster: ``nats_cluster`` of tests/support/nats.py,
stopped after the test).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.chaos._support import percentile, report
from tests.integration.eventlog._server import EventLogProcess
from tests.integration.eventlog.test_observability import sample, scrape
from tests.support.nats import NatsCluster, nats_cluster, unique_stream_name
from tests.support.procs import SIDECAR_BIN
from tests.support.storm import StormPlan, StormResult, check_log, run_storm

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

__all__ = ["nats_cluster"]  # the fixture (a fresh three-node cluster), imported for this module

SQLITE_LIMIT = 1
"""Append requests the SQLite log serves at once: far below the sidecars shipping together
(SQLite commits fast, so the lowest limit keeps refusals certain on a quick machine)."""
JETSTREAM_LIMIT = 2
"""The same for JetStream R3, whose replicated commits take longer."""
SHIPPING = {"backoff_max_ms": 2_000.0}
"""The shippers' cap on any wait (a hint included), so the test drains within seconds."""


class _NatsEventLog(EventLogProcess):
    """The event log server harness on a ``nats://`` store."""

    def __init__(self, workdir: Path, store_url: str, *extra: str) -> None:
        self._store_url = store_url
        super().__init__(workdir, *extra)

    def args(self) -> list[str]:
        args = super().args()
        args[args.index("--store") + 1] = self._store_url
        return args


def _storm(log: EventLogProcess, workdir: Path, sidecars: int, processes: int) -> StormResult:
    assert sample(scrape(log), "eventlog_appends_refused_total", reason="overloaded") == 0.0
    plan = StormPlan(address=log.address, workdir=workdir, sidecars=sidecars,
                     processes=processes, breakers=12, shipping=SHIPPING,
                     drain_timeout_s=60.0, ready_timeout_s=60.0)
    result = run_storm(plan)
    check_log(result, log.stub)
    return result


def _check(name: str, result: StormResult, refused: float, verify: subprocess.CompletedProcess[
        str]) -> None:
    client_refused = result.append_codes.get("RESOURCE_EXHAUSTED", 0)
    report(name, sidecars=result.sidecars, processes=result.processes,
           events=len(result.expected_ids), durable_s=round(result.durable_s, 2),
           appends=len(result.append_latencies_s),
           append_p99_ms=round(percentile(result.latencies_s(ok=True), 0.99) * 1000),
           refused_server=int(refused), refused_client=client_refused,
           stored=result.stored, distinct=result.distinct, missing=result.missing,
           verify_rc=verify.returncode,
           retried_after_hint=len(result.hint_gaps_s),
           min_wait_beyond_hint_ms=round(min(result.hint_gaps_s, default=0.0) * 1000, 1))
    assert refused > 0, "the log never shed load: the storm did not exceed the limit"
    assert 0 < client_refused <= refused  # every refusal the shippers saw, the log counted
    assert result.worker_failures.get("RESOURCE_EXHAUSTED", 0) == client_refused
    assert result.hint_gaps_s, "no shipper tried again after a hinted refusal"
    # each waited at least the hint (capped at backoff_max_ms), counted from the answer
    assert min(result.hint_gaps_s) >= 0.0
    assert result.exactly_once, (result.stored, result.distinct, len(result.expected_ids),
                                 result.missing, result.unexpected)
    assert len(result.expected_ids) == result.sidecars * 13  # 12 trips + ConfigApplied each
    assert verify.returncode == 0, verify.stdout + verify.stderr


def _verify(store_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SIDECAR_BIN, "eventlog", "verify", "--store", store_url],
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_storm_on_sqlite_is_shed_backed_off_and_delivered_exactly_once(
        tmp_path: Path) -> None:
    (tmp_path / "log").mkdir()
    with EventLogProcess(tmp_path / "log", "--max-pending-appends", str(SQLITE_LIMIT)) as log:
        result = _storm(log, tmp_path / "sidecars", sidecars=48, processes=3)
        refused = sample(scrape(log), "eventlog_appends_refused_total", reason="overloaded")
        log.kill()
        verify = _verify(log.store_url)
    _check("storm-sqlite", result, refused or 0.0, verify)


def test_a_storm_on_jetstream_r3_is_shed_backed_off_and_delivered_exactly_once(
        tmp_path: Path, nats_cluster: NatsCluster) -> None:
    url = nats_cluster.store_url(stream=unique_stream_name("STORM"), replicas=3)
    (tmp_path / "log").mkdir()
    with _NatsEventLog(tmp_path / "log", url, "--max-pending-appends",
                       str(JETSTREAM_LIMIT)) as log:
        result = _storm(log, tmp_path / "sidecars", sidecars=40, processes=2)
        refused = sample(scrape(log), "eventlog_appends_refused_total", reason="overloaded")
        log.kill()
    _check("storm-jetstream-r3", result, refused or 0.0, _verify(url))
