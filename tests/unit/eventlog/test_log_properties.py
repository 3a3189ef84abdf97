"""Property tests: random interleavings of appends from several producers, with retries,
duplicates, racing retries, conflicts and forged events, keep every log invariant; and the
checkpointed projections equal both a rebuild and a naive fold over the log.

Each example runs a scenario of rounds against a fresh SQLite store. In a round every chosen
producer does one thing, all of them concurrently (``asyncio.gather``), like sidecars shipping
at the same time; the projection runner may fold (and may restart from its checkpoints) in the
same round.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.eventlog.audit import verify
from sidecar.eventlog.event_protos import decode_payload
from sidecar.eventlog.port import (
    AppendOutcome,
    ChainError,
    ConflictError,
    EventStore,
    NewEvent,
    StoredEvent,
)
from sidecar.eventlog.projections.runner import ProjectionRunner, rebuild
from sidecar.eventlog.sqlite.store import SqliteEventStore
from sidecar.ids import uuid7
from sidecar.v1 import events_pb2
from tests.contract.store_contract import read_everything
from tests.support.events import StreamFactory, rehash

S = 1_000_000_000
UPSTREAMS = ("payments", "stock")
STATES = ("CLOSED", "OPEN", "HALF_OPEN")
_STATE_NAME = {
    events_pb2.BREAKER_STATE_CLOSED: "CLOSED",
    events_pb2.BREAKER_STATE_OPEN: "OPEN",
    events_pb2.BREAKER_STATE_HALF_OPEN: "HALF_OPEN",
}

# --- scenario strategies ------------------------------------------------------------------

event_specs = st.one_of(
    st.tuples(
        st.just("transition"), st.sampled_from(UPSTREAMS), st.integers(1, 2), st.integers(0, 30)
    ),
    st.tuples(
        st.just("config"),
        st.frozensets(st.sampled_from(UPSTREAMS), min_size=1),
        st.sampled_from(["start", "reload"]),
        st.integers(0, 30),
    ),
    st.tuples(st.just("mode"), st.sampled_from(UPSTREAMS), st.integers(0, 30)),
)
actions = st.one_of(
    st.tuples(st.just("new"), st.lists(event_specs, min_size=1, max_size=4)),
    st.tuples(st.just("new_racing_retry"), st.lists(event_specs, min_size=1, max_size=4)),
    st.tuples(st.just("retry_last")),
    st.tuples(st.just("resend_old"), st.integers(0, 10_000)),
    st.tuples(st.just("conflict"), st.integers(0, 10_000)),
    st.tuples(st.just("forge")),
)
rounds = st.tuples(
    st.dictionaries(st.integers(0, 2), actions, min_size=1, max_size=3),
    st.sampled_from(["none", "fold", "fold_after_restart"]),
)
scenarios = st.lists(rounds, min_size=1, max_size=16)


# --- the producer model ---------------------------------------------------------------------


@dataclass
class Producer:
    factory: StreamFactory
    breaker_states: dict[str, str] = field(default_factory=dict)
    acked: list[NewEvent] = field(default_factory=list)
    last_batch: list[NewEvent] = field(default_factory=list)

    def make(self, spec: tuple[Any, ...]) -> NewEvent:
        kind = spec[0]
        at_ns = self.factory.now_ns + spec[-1] * S
        if kind == "transition":
            _, upstream, step, _ = spec
            current = self.breaker_states.get(upstream, "CLOSED")
            target = STATES[(STATES.index(current) + step) % 3]
            self.breaker_states[upstream] = target
            return self.factory.transition(upstream, current, target, at_ns=at_ns)
        if kind == "config":
            _, upstreams, source, _ = spec
            for upstream in list(self.breaker_states):
                if upstream not in upstreams or source == "start":
                    self.breaker_states.pop(upstream)
            return self.factory.config_applied(sorted(upstreams), source=source, at_ns=at_ns)
        _, upstream, _ = spec
        return self.factory.mode_changed(upstream, at_ns=at_ns)


class Model:
    """What the producers were told: every acknowledged event and its position."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.producers = [Producer(StreamFactory("checkout", f"pod-{i}")) for i in range(3)]
        self.positions: dict[str, int] = {}

    def ack(self, events: list[NewEvent], outcomes: list[AppendOutcome]) -> None:
        assert [o.event_id for o in outcomes] == [e.event_id for e in events]
        for event, outcome in zip(events, outcomes, strict=True):
            known = self.positions.setdefault(event.event_id, outcome.global_position)
            assert known == outcome.global_position, "a retry moved an event"
            assert outcome.version == event.version

    async def act(self, index: int, action: tuple[Any, ...]) -> None:
        producer = self.producers[index]
        kind = action[0]
        if kind in ("new", "new_racing_retry"):
            batch = [producer.make(spec) for spec in action[1]]
            if kind == "new":
                self.ack(batch, await self.store.append(batch))
            else:  # the producer timed out and retried while the first try was in flight
                first, second = await asyncio.gather(
                    self.store.append(batch), self.store.append(batch)
                )
                self.ack(batch, first)
                self.ack(batch, second)
                fresh = [a.duplicate or b.duplicate for a, b in zip(first, second, strict=True)]
                assert all(fresh) and not any(
                    a.duplicate and b.duplicate for a, b in zip(first, second, strict=True)
                )
            producer.acked.extend(batch)
            producer.last_batch = batch
        elif kind == "retry_last" and producer.last_batch:
            outcomes = await self.store.append(producer.last_batch)
            assert all(o.duplicate for o in outcomes)
            self.ack(producer.last_batch, outcomes)
        elif kind == "resend_old" and producer.acked:
            event = producer.acked[action[1] % len(producer.acked)]
            outcomes = await self.store.append([event])
            assert outcomes[0].duplicate
            self.ack([event], outcomes)
        elif kind == "conflict" and producer.acked:
            taken = producer.acked[action[1] % len(producer.acked)]
            rival = rehash(taken, event_id=uuid7())
            try:
                await self.store.append([rival])
            except ConflictError as error:
                assert error.existing_event_id == taken.event_id
            else:
                raise AssertionError("a different event at a taken version was stored")
        elif kind == "forge":
            saved = (producer.factory.version, producer.factory.head_hash, producer.factory.now_ns)
            honest = producer.factory.transition("payments", "CLOSED", "OPEN")
            producer.factory.version, producer.factory.head_hash, producer.factory.now_ns = saved
            forged = dataclasses.replace(honest, hash=bytes(32))
            try:
                await self.store.append([forged])
            except ChainError:
                pass
            else:
                raise AssertionError("a forged event was stored")


# --- the naive fold -----------------------------------------------------------------------


def naive_fold(log: list[StoredEvent], now_ns: int) -> dict[tuple[str, str, str], tuple[Any, ...]]:
    """Breaker answers computed the plain way: one loop, plain dicts, no checkpoints."""
    present: dict[tuple[str, str, str], dict[str, Any]] = {}
    history: dict[tuple[str, str, str], dict[str, Any]] = {}

    def hist(key: tuple[str, str, str]) -> dict[str, Any]:
        return history.setdefault(
            key,
            {
                "open_total": 0,
                "open_since": None,
                "incident": None,
                "recoveries": 0,
                "recovery_total": 0,
                "counts": Counter(),
            },
        )

    def end_open(h: dict[str, Any], at: int) -> None:
        if h["open_since"] is not None:
            h["open_total"] += at - h["open_since"]
            h["open_since"] = None

    for event in log:
        payload = decode_payload(event.type, event.payload)
        at = event.occurred_at_ns
        if isinstance(payload, events_pb2.BreakerTransitioned):
            key = (payload.service, payload.instance, payload.upstream)
            to_state = _STATE_NAME[payload.to_state]
            row = present.setdefault(key, {"mode": ""})
            row.update(state=to_state, since=at, mode="enforce")
            h = hist(key)
            h["counts"][(_STATE_NAME[payload.from_state], to_state)] += 1
            if to_state == "OPEN":
                if h["open_since"] is None:
                    h["open_since"] = at
                if h["incident"] is None:
                    h["incident"] = at
            else:
                end_open(h, at)
            if to_state == "CLOSED" and h["incident"] is not None:
                h["recoveries"] += 1
                h["recovery_total"] += at - h["incident"]
                h["incident"] = None
        elif isinstance(payload, events_pb2.BreakerModeChanged):
            key = (payload.service, payload.instance, payload.upstream)
            present.setdefault(key, {"state": "CLOSED", "since": at})["mode"] = "metrics_only"
        elif isinstance(payload, events_pb2.ConfigApplied):
            for key in [k for k in history if k[:2] == (payload.service, payload.instance)]:
                if payload.source == "start" or key[2] not in payload.upstreams:
                    end_open(history[key], at)
                    history[key]["incident"] = None
            for key in [k for k in present if k[:2] == (payload.service, payload.instance)]:
                if key[2] not in payload.upstreams:
                    del present[key]
            for upstream in payload.upstreams:
                key = (payload.service, payload.instance, upstream)
                row = present.setdefault(key, {"state": "CLOSED", "since": at, "mode": ""})
                if payload.source == "start" and row["state"] != "CLOSED":
                    row.update(state="CLOSED", since=at)

    answers = {}
    for key, row in present.items():
        h = hist(key)
        open_ns = h["open_total"] + (now_ns - h["open_since"] if h["open_since"] is not None else 0)
        mttr = h["recovery_total"] / h["recoveries"] / 1e9 if h["recoveries"] else 0.0
        counts = tuple(sorted((f, t, c) for (f, t), c in h["counts"].items()))
        answers[key] = (
            row["state"],
            row["since"],
            row["mode"],
            open_ns / 1e9,
            h["recoveries"],
            mttr,
            counts,
        )
    return answers


# --- the property -------------------------------------------------------------------------


async def run_scenario(path: Path, scenario: list[tuple[dict[int, tuple[Any, ...]], str]]) -> None:
    store = SqliteEventStore(path)
    runner = ProjectionRunner(store, snapshot_every_events=3, page_events=5)
    try:
        model = Model(store)
        for actions_by_producer, fold in scenario:
            work = [
                model.act(index, action) for index, action in sorted(actions_by_producer.items())
            ]
            if fold == "fold_after_restart":
                runner = ProjectionRunner(store, snapshot_every_events=3, page_events=5)
                await runner.load()
            if fold != "none":
                work.append(runner.catch_up())
            await asyncio.gather(*work)

        log = await read_everything(store, page=6)
        # Positions are 1..n without gaps; no event is stored twice.
        assert [e.global_position for e in log] == list(range(1, len(log) + 1))
        assert len({e.event_id for e in log}) == len(log)
        # Every acknowledged event is stored exactly where its acknowledgement said.
        assert {e.event_id: e.global_position for e in log} == model.positions
        # Each stream holds its producer's acknowledged events, versions 1..k, in order.
        for producer in model.producers:
            stream = await store.read_stream(producer.factory.stream, limit=1000)
            assert [e.as_new_event() for e in stream] == producer.acked
            assert [e.version for e in stream] == list(range(1, len(stream) + 1))
        report = await verify(store, page_events=4)
        assert report.ok, report.summary()

        await runner.catch_up()
        rebuilt = await rebuild(store, save=False)
        assert runner.dump() == rebuilt.dump()
        now_ns = max((e.occurred_at_ns for e in log), default=0) + 7 * S
        views = runner.views()
        folded = {
            (s.service, s.instance, s.upstream): (
                s.state,
                s.since_ns,
                s.mode,
                s.seconds_open,
                s.recoveries,
                s.mean_time_to_recover_s,
                s.transition_counts,
            )
            for s in views.instances(now_ns)
        }
        assert folded == naive_fold(log, now_ns)
    finally:
        await store.close()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios)
def test_random_interleavings_keep_every_log_invariant_and_projections_equal_a_naive_fold(
    scenario: list[tuple[dict[int, tuple[Any, ...]], str]],
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(run_scenario(Path(directory) / "events.db", scenario))
