"""Retention on a real ``sidecar eventlog serve`` (SQLite) under continuous traffic.

Real sidecars (recorder, outbox, shipper, as the proxy wires them) trip breakers every few
milliseconds while the server deletes what is past retention every 200 ms:

- by count (``--retain-events-per-stream``): the log stays bounded while events keep coming,
  every event recorded is either kept or accounted for by an anchor (none stored twice), the
  totals (``eventlog_events_appended_total``) still count the deleted ones, a retried append of
  a deleted event is refused with FAILED_PRECONDITION "before the retention anchor", and the
  offline ``verify``/``rebuild`` say which anchors they started from;
- by age (``--retain-days``, a tiny fraction of a day): a sidecar that went quiet has its whole
  stream deleted; restarted, it reads the anchor as the log's head, takes no rollback for it,
  and its next events chain on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sidecar.v1 import eventlog_pb2
from tests.integration.eventlog._rollback import _cli, _read_stream, _Sidecar, _until
from tests.integration.eventlog._server import EventLogProcess
from tests.integration.eventlog.test_observability import sample, scrape
from tests.support.events import StreamFactory

pytestmark = pytest.mark.integration

KEEP = 30

COUNT_RETENTION_ARGS = ("--retain-events-per-stream", str(KEEP), "--retention-interval-s", "0.2")
"""The server flags :func:`count_retention_scenario` expects (the JetStream test uses them)."""


class _Traffic:
    """Each sidecar trips a breaker every ``every_s`` on a thread until stopped."""

    def __init__(self, sidecars: list[_Sidecar], every_s: float = 0.004) -> None:
        self.sidecars = sidecars
        self._stop = threading.Event()
        self._every_s = every_s
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            for sidecar in self.sidecars:
                sidecar.trip(n)
            n += 1
            self._stop.wait(self._every_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)


def _drained(sidecars: list[_Sidecar]) -> bool:
    return all(s.outbox.stats().pending == 0 and s.queue.depth() == 0 for s in sidecars)


@pytest.fixture
def counted(tmp_path: Path) -> Iterator[EventLogProcess]:
    with EventLogProcess(tmp_path, *COUNT_RETENTION_ARGS) as process:
        yield process


def test_count_retention_bounds_the_log_under_traffic_and_loses_nothing_it_was_given(
        tmp_path: Path, counted: EventLogProcess) -> None:
    count_retention_scenario(tmp_path, counted, counted.store_url, "sqlite")


def count_retention_scenario(tmp_path: Path, server: EventLogProcess, store_url: str,
                             store_kind: str) -> None:
    """Two sidecars under traffic against ``server`` (started with COUNT_RETENTION_ARGS)."""
    counted = server
    sidecars = [_Sidecar(tmp_path, f"pod-{n}", counted.address) for n in (1, 2)]
    traffic = _Traffic(sidecars)
    own = StreamFactory("retention", "pod-own")
    own_events = own.transitions(KEEP + 20)
    try:
        counted.append(own_events)
        started = time.monotonic()
        _until(lambda: counted.head() >= 1500, "1,500 events under traffic")

        def deleted_now() -> float:
            found = sample(scrape(counted), "eventlog_retention_deleted_events_total",
                           store=store_kind)
            return found or 0.0

        _until(lambda: deleted_now() > 1000, "retention to delete 1,000 events under traffic")
        elapsed = time.monotonic() - started
        samples = scrape(counted)
        stored = sample(samples, "eventlog_stored_events", store=store_kind)
        # bounded while traffic goes on: KEEP per stream plus what 0.2 s (and a loaded
        # machine's lag) brings, far below the 1,500+ appended
        assert stored is not None and stored < 3 * KEEP + 400 * (elapsed / 3 + 1), (stored,
                                                                                   elapsed)
    finally:
        traffic.stop()
        for sidecar in sidecars:
            _until(lambda s=sidecar: _drained([s]), "the outbox to drain")  # type: ignore[misc]

    with pytest.raises(grpc.RpcError) as refused:  # a retried append of a deleted event
        counted.append(own_events[:1])
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "before the retention anchor" in str(refused.value.details())

    time.sleep(0.6)  # a last retention run after the traffic stopped
    recorded = sum(len(s.ids) for s in sidecars) + len(own_events)
    samples = scrape(counted)
    appended = sample(samples, "eventlog_events_appended_total", type="BreakerTransitioned")
    assert appended == recorded  # totals count what retention deleted
    for sidecar in [*sidecars]:
        page = counted.stub.ReadStream(
            eventlog_pb2.ReadStreamRequest(stream=sidecar.stream, from_version=1, limit=1),
            timeout=10.0)
        kept = _read_stream(counted, sidecar.stream)
        kept_ids = [e.event_id for e in kept]
        assert len(kept_ids) == len(set(kept_ids)) <= KEEP
        assert set(kept_ids) <= set(sidecar.ids)
        anchor = int(page.retention_anchor_version)
        assert anchor + len(kept) == len(sidecar.ids)  # every recorded event kept or anchored
        assert [int(e.version) for e in kept] == list(range(anchor + 1, len(sidecar.ids) + 1))
        assert bytes(kept[0].prev_hash) == bytes(page.retention_anchor_hash)
    for sidecar in sidecars:
        sidecar.close()
    counted.kill()

    verified = _cli("verify", "--store", store_url)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "from their retention anchors" in verified.stdout
    rebuilt = _cli("rebuild", "--store", store_url)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert "from the retention snapshots at position" in rebuilt.stdout


def test_a_quiet_stream_deleted_whole_by_age_chains_on_without_a_rollback(
        tmp_path: Path) -> None:
    retain_s = 3.0
    with EventLogProcess(tmp_path, "--retain-days", f"{retain_s / 86_400:.9f}",
                         "--retention-interval-s", "0.2") as server:
        quiet = _Sidecar(tmp_path, "pod-quiet", server.address)
        traffic = _Traffic([quiet], every_s=0.01)
        _until(lambda: len(quiet.ids) >= 100, "100 events")
        traffic.stop()
        _until(lambda: _drained([quiet]), "the outbox to drain")
        recorded = len(quiet.ids)
        _until(lambda: not _read_stream(server, quiet.stream), "the whole stream to be deleted")
        quiet.close()

        again = _Sidecar(tmp_path, "pod-quiet", server.address)  # restarted on the same outbox
        try:
            before = len(again.ids)
            for n in range(5):
                again.trip(n)
            _until(lambda: len(_read_stream(server, quiet.stream)) == 5, "the next 5 events")
            kept = _read_stream(server, quiet.stream)
            assert [int(e.version) for e in kept] == list(range(recorded + 1, recorded + 6))
            assert set(e.event_id for e in kept) == set(again.ids[before:])
            assert again.shipper.stats().rollbacks == 0
        finally:
            again.close()
        samples = scrape(server)
        assert sample(samples, "eventlog_retention_anchored_streams", store="sqlite") == 1
        age = sample(samples, "eventlog_retention_anchor_age_seconds", anchor="newest")
        assert age is not None and age > 0
