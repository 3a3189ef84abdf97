"""Property test of retention: random appends, retention runs (cuts), restarts and retried
appends against a SQLite log, beside a twin log that gets the same appends and is never cut.

After every scenario:

- ``verify`` passes on the cut log (chains proven from the anchors);
- its projections, kept incrementally across restarts and rebuilt from the retention
  snapshots, equal byte for byte those of the twin (a rebuild of the log never cut);
- every kept event is the twin's event at the same position, the kept events and the anchors
  account for every event appended, and no event id is stored twice: a retried append is a
  duplicate while its event is kept and refused as before the retention anchor once deleted.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sidecar.eventlog.audit import verify
from sidecar.eventlog.port import BeforeAnchorError, NewEvent, StoreError, deleted_events
from sidecar.eventlog.projections.follower import server_projections
from sidecar.eventlog.projections.runner import ProjectionRunner, rebuild
from sidecar.eventlog.retention.base import resume_past_anchors
from sidecar.eventlog.retention.job import RetentionJob
from sidecar.eventlog.retention.policy import NS_PER_DAY, RetentionPolicy
from sidecar.eventlog.sqlite.store import SqliteEventStore
from tests.contract.store_contract import read_everything
from tests.support.events import StreamFactory

START_NS = 1_750_000_000 * 10**9
UPSTREAMS = ("payments", "stock", "search")

policies = st.one_of(
    st.builds(RetentionPolicy, retain_days=st.sampled_from([0.5, 1.0, 2.5]),
              cut_events=st.integers(1, 3)),
    st.builds(RetentionPolicy, retain_events_per_stream=st.integers(1, 4),
              cut_events=st.integers(1, 3)),
    st.builds(RetentionPolicy, retain_days=st.just(1.0),
              retain_events_per_stream=st.integers(1, 4), cut_events=st.integers(1, 3)),
)
appends = st.tuples(st.just("append"), st.integers(0, 2), st.integers(1, 4), st.integers(0, 36))
others = st.one_of(
    st.tuples(st.just("fold"), st.integers(0, 12)),
    st.tuples(st.just("restart")),
    st.tuples(st.just("retry"), st.integers(0, 10_000)),
)
retains = st.tuples(st.just("retain"), policies, st.booleans())
rounds = st.tuples(st.lists(appends, min_size=1, max_size=3), st.lists(others, max_size=2),
                   st.lists(retains, max_size=1))
"""One round: some appends, maybe a fold, restart or retried append, maybe a retention run."""
scenarios = st.lists(rounds, min_size=1, max_size=10).map(
    lambda rs: [action for r in rs for part in r for action in part])


@dataclass
class World:
    """The cut log, its twin, the producers and the fake store clock (hours move it)."""

    folder: Path
    now_ns: int = START_NS
    producers: list[StreamFactory] = field(default_factory=lambda: [
        StreamFactory(instance=f"pod-{i}") for i in range(3)])
    appended: list[NewEvent] = field(default_factory=list)
    cut: SqliteEventStore | None = None
    twin: SqliteEventStore | None = None
    runner: ProjectionRunner | None = None

    def clock(self) -> int:
        return self.now_ns

    def open_cut(self) -> SqliteEventStore:
        self.cut = SqliteEventStore(self.folder / "cut.db", clock_ns=self.clock)
        return self.cut

    async def resume(self) -> ProjectionRunner:
        """What the server does at start: checkpoints, then past the anchors if behind."""
        assert self.cut is not None
        self.runner = ProjectionRunner(self.cut, server_projections(), snapshot_every_events=3)
        await self.runner.load()
        await resume_past_anchors(self.cut, self.runner, strict=False)
        return self.runner


async def _play(world: World, scenario: list[tuple[object, ...]]) -> None:
    cut = world.open_cut()
    world.twin = SqliteEventStore(world.folder / "twin.db", clock_ns=world.clock)
    runner = await world.resume()
    for action in scenario:
        kind = action[0]
        if kind == "append":
            _, which, count, hours = action
            world.now_ns += int(hours) * NS_PER_DAY // 24
            producer = world.producers[int(which)]
            events = [producer.transition(UPSTREAMS[(producer.version + i) % 3],
                                          "CLOSED" if (producer.version + i) % 2 else "OPEN",
                                          "OPEN" if (producer.version + i) % 2 else "CLOSED")
                      for i in range(int(count))]
            await cut.append(events)
            await world.twin.append(events)
            world.appended.extend(events)
        elif kind == "fold":
            await runner.catch_up(int(action[1]))
        elif kind == "retain":
            _, policy, fold_first = action
            assert isinstance(policy, RetentionPolicy)
            if fold_first:  # else only what the projections folded earlier may go
                await runner.catch_up()
            await RetentionJob(cut, runner, policy, clock_ns=world.clock).run_once()
        elif kind == "restart":
            await runner.snapshot()
            await cut.close()
            cut = world.open_cut()
            runner = await world.resume()
        elif kind == "retry" and world.appended:
            event = world.appended[int(action[1]) % len(world.appended)]
            anchor = await cut.anchor(event.stream)
            try:
                outcome = await cut.append([event])
            except BeforeAnchorError:
                assert anchor is not None and event.version <= anchor.version
                note("a retried append refused before the anchor")
            else:
                assert outcome[0].duplicate
                assert anchor is None or event.version > anchor.version
    await runner.catch_up()


async def _check(world: World) -> None:
    cut, twin, runner = world.cut, world.twin, world.runner
    assert cut is not None and twin is not None and runner is not None
    report = await verify(cut)
    assert report.ok, report.summary()

    never_cut = await rebuild(twin, server_projections(), save=False)
    assert runner.dump() == never_cut.dump()
    rebuilt = await rebuild(cut, server_projections(), save=False)
    assert rebuilt.dump() == never_cut.dump()

    kept = await read_everything(cut)
    everything = {e.global_position: e for e in await read_everything(twin)}
    assert all(everything[e.global_position] == e for e in kept)
    ids = [e.event_id for e in kept]
    assert len(ids) == len(set(ids))
    assert len(kept) + deleted_events(await cut.anchors()) == len(world.appended)
    assert await cut.head_position() == await twin.head_position()
    deleted = deleted_events(await cut.anchors())
    event("events deleted: " + ("none" if not deleted else "1-4" if deleted < 5 else "5+"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios)
def test_a_cut_log_verifies_and_projects_like_the_log_never_cut(
    scenario: list[tuple[object, ...]],
) -> None:
    async def run() -> None:
        with tempfile.TemporaryDirectory() as folder:
            world = World(Path(folder))
            try:
                await _play(world, scenario)
                await _check(world)
            finally:
                for store in (world.cut, world.twin):
                    if store is not None:
                        await store.close()

    asyncio.run(run())
    for seen in _notes:
        event(seen)
    _notes.clear()


_notes: set[str] = set()


def note(what: str) -> None:
    """Remember a path the example took (``hypothesis.event`` is reported per example)."""
    _notes.add(what)


def test_rebuild_refuses_a_cut_log_whose_retention_snapshots_are_missing(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        store = SqliteEventStore(tmp_path / "events.db")
        producer = StreamFactory()
        try:
            await store.append(producer.transitions(4))
            await store.cut(producer.stream, 2, START_NS)  # by hand: no snapshot was saved
            with pytest.raises(StoreError, match=r"retention snapshot of .* ends before it"):
                await rebuild(store, server_projections(), save=False)
        finally:
            await store.close()

    asyncio.run(run())
