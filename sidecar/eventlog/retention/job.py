"""The event log server's retention job: deletes events past retention in the background.

Every ``interval_s`` (``--retention-interval-s``) the job

1. saves the projections' retention snapshots (:func:`~sidecar.eventlog.retention.base.
   save_base`), which bounds the cut: only events the projections have folded may go;
2. walks every stream: from its anchor, finds the end of the prefix past retention
   (:func:`~sidecar.eventlog.retention.last_deletable`, ``O(log n)`` one-event reads) and
   cuts it, at most ``cut_events`` per store call so appends never wait behind one huge delete;
3. logs one line per run that deleted something, and keeps the figures the metrics report.

The job never blocks the loop (every store call is async) and a failed run is logged and
retried at the next interval: retention is housekeeping, the log works without it.

Metrics (:class:`RetentionCollector`, on the event log's ``/metrics``):

==============================================  ===========  ======================================
``eventlog_stored_events``                      store        events kept (head - deleted), gauge
``eventlog_retention_deleted_events_total``     store        deleted by retention (from anchors)
``eventlog_retention_anchored_streams``         store        streams with an anchor, gauge
``eventlog_retention_anchor_age_seconds``       anchor       newest / oldest anchor's age, gauge
``eventlog_retention_runs_total``               outcome      ok / failed, counter
==============================================  ===========  ======================================

The deleted count is a function of the log (the anchors' versions summed), so it survives
restarts and is never counted twice. The anchor ages are store time of the last deleted event:
with retention running the newest anchor stays near ``retain_days`` old; growing past it says
the job is not keeping up (or the log is quiet).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sidecar.eventlog.port import EventStore, RetentionAnchor, StoreError, deleted_events
from sidecar.eventlog.projections.runner import ProjectionRunner
from sidecar.eventlog.retention.base import save_base
from sidecar.eventlog.retention.policy import Probe, RetentionPolicy, last_deletable

log = logging.getLogger("sidecar.eventlog.retention")

RUN_OUTCOMES: Final = ("ok", "failed")


@dataclass(frozen=True, slots=True)
class RetentionFigures:
    """What the metrics report, replaced as a whole after each run (read from any thread)."""

    head_position: int = 0
    deleted_events: int = 0
    anchored_streams: int = 0
    newest_anchor_recorded_ns: int = 0
    oldest_anchor_recorded_ns: int = 0
    runs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RUN_OUTCOMES, 0))


@dataclass(frozen=True, slots=True)
class RetentionRun:
    """One run: what it deleted, and from which streams."""

    deleted: int
    streams_cut: int
    folded_through: int


class RetentionJob:
    """Runs the retention policy against a store (see the module docstring)."""

    def __init__(
        self,
        store: EventStore,
        runner: ProjectionRunner,
        policy: RetentionPolicy | None,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._store = store
        self._runner = runner
        self.policy = policy
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        self._figures = RetentionFigures()

    @property
    def figures(self) -> RetentionFigures:
        with self._lock:
            return self._figures

    async def refresh(self) -> None:
        """Read the anchors and the head into the figures (at start and after each run)."""
        anchors = await self._store.anchors()
        head = await self._store.head_position()
        recorded = [anchor.recorded_at_ns for anchor in anchors.values()]
        with self._lock:
            self._figures = RetentionFigures(
                head_position=head,
                deleted_events=deleted_events(anchors),
                anchored_streams=len(anchors),
                newest_anchor_recorded_ns=max(recorded, default=0),
                oldest_anchor_recorded_ns=min(recorded, default=0),
                runs=self._figures.runs,
            )

    def _count_run(self, outcome: str) -> None:
        with self._lock:
            runs = dict(self._figures.runs)
            runs[outcome] += 1
            self._figures = dataclasses.replace(self._figures, runs=runs)

    async def run_once(self) -> RetentionRun:
        """Save the retention snapshots, then cut every stream's prefix past retention."""
        policy = self.policy
        if policy is None:
            await self.refresh()
            return RetentionRun(0, 0, 0)
        folded_through = await save_base(self._store, self._runner)
        anchors = await self._store.anchors()
        now_ns = self._clock_ns()
        deleted = cut = 0
        for stream in await self._store.streams():
            gone = await self._cut_stream(policy, stream, anchors.get(stream), folded_through,
                                          now_ns)
            deleted += gone
            cut += 1 if gone else 0
        await self.refresh()
        return RetentionRun(deleted, cut, folded_through)

    async def _cut_stream(self, policy: RetentionPolicy, stream: str,
                          anchor: RetentionAnchor | None, folded_through: int,
                          now_ns: int) -> int:
        """Cut ``stream`` as far as the policy allows; returns how many events went."""
        first_kept = anchor.version + 1 if anchor is not None else 1
        head_version, _ = await self._store.stream_head(stream)

        async def event_at(version: int) -> Probe | None:
            page = await self._store.read_stream(stream, version, 1)
            if not page or page[0].version != version:
                return None
            return Probe(version, page[0].recorded_at_ns, page[0].global_position)

        through = await last_deletable(policy, first_kept=first_kept, head_version=head_version,
                                       folded_through=folded_through, now_ns=now_ns,
                                       event_at=event_at)
        done = first_kept - 1
        while done < through:
            step = min(through, done + policy.cut_events)
            await self._store.cut(stream, step, now_ns)
            done = step
        return done - (first_kept - 1)

    async def run(self) -> None:
        """Run every ``interval_s`` until cancelled; a failed run is logged and retried."""
        policy = self.policy
        if policy is None:
            return
        log.info("retention: keeping %s (every %gs)", policy.describe(), policy.interval_s,
                 extra={"event": "retention_started"})
        while True:
            started = time.perf_counter()
            try:
                outcome = await self.run_once()
            except asyncio.CancelledError:
                raise
            except (StoreError, OSError, ValueError) as exc:
                self._count_run("failed")
                log.error("retention run failed: %s (next try in %gs)", exc, policy.interval_s,
                          extra={"event": "retention_failed"})
            else:
                self._count_run("ok")
                if outcome.deleted:
                    log.info(
                        "retention deleted %d events from %d streams in %.2fs (folded "
                        "through position %d)", outcome.deleted, outcome.streams_cut,
                        time.perf_counter() - started, outcome.folded_through,
                        extra={"event": "retention_cut", "deleted": outcome.deleted,
                               "streams": outcome.streams_cut})
            await asyncio.sleep(policy.interval_s)


class RetentionCollector(Collector):
    """The retention and log-size families, from the job's last figures (thread-safe)."""

    def __init__(self, job: RetentionJob, store_kind: str, head_position: Callable[[], int],
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._job = job
        self._store_kind = store_kind
        self._head_position = head_position  # the live head (a plain int the loop updates)
        self._clock_ns = clock_ns

    def collect(self) -> Iterator[Metric]:
        f = self._job.figures
        store = [self._store_kind]
        stored = GaugeMetricFamily("eventlog_stored_events",
                                   "Events kept in the log (head position - deleted by retention).",
                                   labels=["store"])
        head = max(self._head_position(), f.head_position)
        stored.add_metric(store, max(head - f.deleted_events, 0))
        yield stored
        deleted = CounterMetricFamily("eventlog_retention_deleted_events",
                                      "Events deleted by retention (the anchors' versions summed).",
                                      labels=["store"])
        deleted.add_metric(store, f.deleted_events)
        yield deleted
        anchored = GaugeMetricFamily("eventlog_retention_anchored_streams",
                                     "Streams whose oldest events retention deleted.",
                                     labels=["store"])
        anchored.add_metric(store, f.anchored_streams)
        yield anchored
        age = GaugeMetricFamily(
            "eventlog_retention_anchor_age_seconds",
            "Age of the last deleted event of the newest and the oldest retention anchor "
            "(0 while nothing was deleted).", labels=["anchor"])
        now_ns = self._clock_ns()
        for label, recorded in (("newest", f.newest_anchor_recorded_ns),
                                ("oldest", f.oldest_anchor_recorded_ns)):
            age.add_metric([label], max(now_ns - recorded, 0) / 1e9 if recorded else 0.0)
        yield age
        runs = CounterMetricFamily("eventlog_retention_runs",
                                   "Retention runs by outcome, since start.", labels=["outcome"])
        for outcome in RUN_OUTCOMES:
            runs.add_metric([outcome], f.runs.get(outcome, 0))
        yield runs
