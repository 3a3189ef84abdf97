"""Random operation sequences: the balancer's invariants hold whatever callers, DNS and time do."""

from __future__ import annotations

import math
import random
from dataclasses import replace

from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from sidecar.balancer import Balancer, BalancerSettings, Endpoint, OutlierSettings
from tests.unit.balancer._support import FakeClock, Recorder, fail, make_balancer

POOL = [f"10.0.0.{i}:50051" for i in range(1, 7)]
BASE_MS, MAX_MS, INTERVAL_MS = 1000.0, 4000.0, 2000.0


class BalancerMachine(RuleBasedStateMachine):
    """Drives one balancer with set changes, picks, outcomes, cancels, time and reloads."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.recorder = Recorder()
        self.balancer: Balancer[str] = Balancer("payments", BalancerSettings(), OutlierSettings())
        self.calls: list[tuple[Endpoint[str], float]] = []
        self.seen: set[Endpoint[str]] = set()

    def outlier(self, pct: float, consecutive: int | None, rate: float | None) -> OutlierSettings:
        return OutlierSettings(
            consecutive_failures=consecutive, failure_rate=rate, minimum_calls=3,
            base_ejection_ms=BASE_MS, max_ejection_ms=MAX_MS, interval_ms=INTERVAL_MS,
            max_ejection_percent=pct,
        )

    @initialize(
        policy=st.sampled_from(["p2c_ewma", "round_robin", "least_request"]),
        pct=st.sampled_from([0.0, 20.0, 34.0, 50.0, 100.0]),
        consecutive=st.one_of(st.none(), st.integers(1, 3)),
        rate=st.one_of(st.none(), st.sampled_from([0.3, 0.5, 1.0])),
        seed=st.integers(0, 1000),
        initial=st.sets(st.sampled_from(POOL), min_size=3),
    )
    def build(
        self, policy: str, pct: float, consecutive: int | None, rate: float | None, seed: int,
        initial: set[str],
    ) -> None:
        self.balancer = Balancer(
            "payments",
            BalancerSettings(policy=policy, ewma_decay_ms=500.0),  # type: ignore[arg-type]
            self.outlier(pct, consecutive, rate),
            clock=self.clock, wall_clock=self.clock.wall, rng=random.Random(seed),
            listeners=[self.recorder],
        )
        self.update(initial)

    @rule(wanted=st.sets(st.sampled_from(POOL)))
    def update(self, wanted: set[str]) -> None:
        before = {e.address: e for e in self.balancer.endpoints()}
        added, removed = self.balancer.update_endpoints({a: a for a in wanted}, "dns")
        assert {e.address for e in added} == wanted - before.keys()
        assert {e.address for e in removed} == before.keys() - wanted
        assert all(before[e.address] is e for e in removed)
        after = {e.address: e for e in self.balancer.endpoints()}
        assert all(after[a] is before[a] for a in wanted & before.keys())  # kept, not rebuilt
        self.seen.update(added)

    @rule(data=st.data())
    def pick(self, data: st.DataObject) -> None:
        members = self.balancer.endpoints()
        avoid = data.draw(st.sets(st.sampled_from(members))) if members else set()
        endpoint = self.balancer.pick(avoid)
        if not members:
            assert endpoint is None
            return
        assert endpoint is not None
        assert endpoint.in_set and not endpoint.ejected
        active = [e for e in self.balancer.endpoints() if not e.ejected]
        if any(e not in avoid for e in active):
            assert endpoint not in avoid
        self.calls.append((endpoint, self.balancer.start(endpoint)))

    @rule(address=st.sampled_from(POOL), k=st.integers(1, 4))
    def failing_calls(self, address: str, k: int) -> None:
        """``k`` failed calls to one endpoint (whatever pick() says: a stale connection)."""
        endpoints = [e for e in self.balancer.endpoints() if e.address == address]
        if not endpoints:
            return
        for _ in range(k):
            ejections = len(self.recorder.ejections)
            self.balancer.finish(endpoints[0], self.balancer.start(endpoints[0]), failed=True)
            if len(self.recorder.ejections) > ejections:
                event("failures ejected an endpoint")

    @precondition(lambda self: bool(self.calls))
    @rule(data=st.data(), failed=st.booleans())
    def finish(self, data: st.DataObject, failed: bool) -> None:
        endpoint, started = self.calls.pop(data.draw(st.integers(0, len(self.calls) - 1)))
        ejections = len(self.recorder.ejections)
        self.balancer.finish(endpoint, started, failed)
        if len(self.recorder.ejections) > ejections:
            event("an outcome ejected its endpoint")
        if self.recorder.returns:
            event("an endpoint returned")

    @precondition(lambda self: bool(self.calls))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        endpoint, _ = self.calls.pop(data.draw(st.integers(0, len(self.calls) - 1)))
        self.balancer.cancel(endpoint)

    @rule(seconds=st.sampled_from([0.0, 0.0005, 0.3, 1.0, 2.0, 5.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(
        pct=st.sampled_from([0.0, 20.0, 50.0, 100.0]),
        consecutive=st.one_of(st.none(), st.integers(1, 3)),
        enabled=st.booleans(),
    )
    def reload(self, pct: float, consecutive: int | None, enabled: bool) -> None:
        outlier = self.outlier(pct, consecutive, self.balancer.outlier.failure_rate)
        self.balancer.reconfigure(self.balancer.settings, replace(outlier, enabled=enabled))

    @invariant()
    def never_more_ejected_than_the_limit_and_always_one_active(self) -> None:
        n = len(self.balancer.endpoints())
        ejected, active = self.balancer.ejected_count(), self.balancer.active_count()
        assert ejected + active == n
        outlier = self.balancer.outlier
        limit = math.floor(n * outlier.max_ejection_percent / 100) if outlier.enabled else 0
        assert ejected <= limit
        if n:
            assert active >= 1

    @invariant()
    def ejection_time_is_base_times_in_a_row_capped(self) -> None:
        for ejection in self.recorder.ejections:
            expected = min(BASE_MS * ejection.ejections_in_a_row, MAX_MS) / 1000
            assert math.isclose(ejection.ejection_s, expected)

    @invariant()
    def in_flight_counts_exactly_the_open_calls(self) -> None:
        for endpoint in self.seen:
            assert endpoint.in_flight == sum(1 for e, _ in self.calls if e is endpoint)

    def teardown(self) -> None:
        for endpoint, started in self.calls:
            self.balancer.finish(endpoint, started, failed=False)
        assert all(e.in_flight == 0 for e in self.seen)


TestBalancerMachine = BalancerMachine.TestCase
TestBalancerMachine.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)


@given(
    steps=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 20)), min_size=1, max_size=50
    )
)
def test_failures_and_ejections_crowded_into_one_millisecond_never_decay_the_in_a_row_count(
    steps: list[tuple[int, int]],
) -> None:
    # every failure asks for an ejection; an ejection lasts microseconds, so endpoints flap
    balancer, clock, recorder = make_balancer(
        4, consecutive_failures=1, base_ejection_ms=0.01, max_ejection_ms=10_000.0,
        interval_ms=1.0, max_ejection_percent=50.0,
    )
    endpoints = balancer.endpoints()
    began = clock.now
    for index, micros in steps:
        endpoint = endpoints[index]
        balancer.pick()  # notices returns
        if not endpoint.ejected:
            fail(balancer, endpoint, 1)
        clock.advance(micros / 1_000_000)
    assert clock.now - began <= 0.001
    for endpoint in endpoints:
        mine = [e.ejections_in_a_row for e in recorder.ejections if e.endpoint == endpoint.address]
        assert mine == list(range(1, len(mine) + 1))  # +1 each time, never a step down


@given(
    base_ms=st.sampled_from([1.0, 10.0, 250.0, 1000.0]),
    factor=st.integers(1, 12),
    in_a_row=st.integers(1, 10),
)
def test_the_ejection_time_is_base_times_in_a_row_capped_at_the_maximum(
    base_ms: float, factor: int, in_a_row: int
) -> None:
    max_ms = base_ms * factor
    balancer, clock, recorder = make_balancer(
        3, base_ejection_ms=base_ms, max_ejection_ms=max_ms, interval_ms=10 * max_ms
    )
    endpoint = balancer.endpoints()[0]
    for _ in range(in_a_row):  # flap: ejected again the moment it is back
        fail(balancer, endpoint, 5)
        clock.advance(recorder.ejections[-1].ejection_s)
        balancer.pick()
    assert [e.ejection_s for e in recorder.ejections] == [
        min(base_ms * k, max_ms) / 1000 for k in range(1, in_a_row + 1)
    ]


@given(
    failures=st.integers(1, 200),
    n=st.integers(1, 8),
    pct=st.sampled_from([0.0, 10.0, 25.0, 50.0, 90.0, 100.0]),
)
def test_whatever_fails_the_set_keeps_one_active_endpoint_within_the_percent_limit(
    failures: int, n: int, pct: float
) -> None:
    balancer, _, _ = make_balancer(n, consecutive_failures=1, max_ejection_percent=pct)
    rng = random.Random(failures)
    for _ in range(failures):
        fail(balancer, rng.choice(balancer.endpoints()), 1)
    assert balancer.ejected_count() <= math.floor(n * pct / 100)
    assert balancer.active_count() >= 1
    picked = balancer.pick()
    assert picked is not None and not picked.ejected

