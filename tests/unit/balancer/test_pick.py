"""Policies on a fake clock: P2C over PeakEWMA, round_robin, least_request, and ``avoid``."""

from __future__ import annotations

import heapq
import math
from collections import Counter

import pytest

from sidecar.balancer import Balancer, BalancerSettings, Endpoint, PeakEwma
from tests.unit.balancer._support import FakeClock, by_address, call, make_balancer

A, B, C = "10.0.0.1:50051", "10.0.0.2:50051", "10.0.0.3:50051"


def simulate(
    balancer: Balancer[str],
    clock: FakeClock,
    latency_s: dict[str, float],
    *,
    calls: int,
    every_s: float,
) -> Counter[str]:
    """Open-loop load: a call every ``every_s``; each completes after its endpoint's latency."""
    picks: Counter[str] = Counter()
    pending: list[tuple[float, int, Endpoint[str], float]] = []
    start = clock.now
    for i in range(calls):
        arrival = start + i * every_s
        while pending and pending[0][0] <= arrival:
            done, _, finished, began = heapq.heappop(pending)
            clock.now = done
            balancer.finish(finished, began, failed=False)
        clock.now = arrival
        endpoint = balancer.pick()
        assert endpoint is not None
        picks[endpoint.address] += 1
        started = balancer.start(endpoint)
        heapq.heappush(pending, (arrival + latency_s[endpoint.address], i, endpoint, started))
    for done, _, endpoint, started in sorted(pending):
        clock.now = max(clock.now, done)
        balancer.finish(endpoint, started, failed=False)
    return picks


# --- p2c_ewma -------------------------------------------------------------------------------


def test_a_slow_endpoint_among_three_gets_at_most_a_tenth_of_the_calls() -> None:
    balancer, clock, _ = make_balancer(3, seed=7)
    picks = simulate(
        balancer, clock, {A: 0.001, B: 0.001, C: 0.100}, calls=30_000, every_s=0.002
    )
    assert picks[C] <= 0.10 * 30_000
    assert picks[A] > 0.4 * 30_000 and picks[B] > 0.4 * 30_000


def test_the_slow_endpoint_is_avoided_from_its_first_slow_reply_on() -> None:
    balancer, clock, _ = make_balancer(2, seed=1, settings=BalancerSettings(default_rtt_ms=1.0))
    call(balancer, by_address(balancer, A), latency_s=0.100, clock=clock)
    assert by_address(balancer, A).load.estimate_ms == pytest.approx(100.0)  # peak, at once
    assert {balancer.pick().address for _ in range(200)} == {B}  # type: ignore[union-attr]


def test_in_flight_calls_multiply_the_cost() -> None:
    balancer, clock, _ = make_balancer(2, seed=3, settings=BalancerSettings(default_rtt_ms=1.0))
    a, b = by_address(balancer, A), by_address(balancer, B)
    call(balancer, a, latency_s=0.010, clock=clock)  # a: 10 ms
    call(balancer, b, latency_s=0.030, clock=clock)  # b: 30 ms
    clock.advance(0.0)
    assert {balancer.pick() for _ in range(50)} == {a}  # 10 x 1 < 30 x 1
    balancer.start(a)
    balancer.start(a)
    balancer.start(a)  # a: about 10 x 4 = 40 > 30
    assert {balancer.pick() for _ in range(50)} == {b}
    balancer.cancel(a)
    balancer.cancel(a)  # a: about 10 x 2 = 20 < 30
    assert {balancer.pick() for _ in range(50)} == {a}


def test_decay_makes_an_idle_slow_endpoint_cheap_again_after_a_few_time_constants() -> None:
    tau_ms = 100.0
    balancer, clock, _ = make_balancer(
        3, seed=5, settings=BalancerSettings(ewma_decay_ms=tau_ms, default_rtt_ms=1.0)
    )
    slow = by_address(balancer, C)
    call(balancer, slow, latency_s=0.100, clock=clock)
    began = clock.now
    first_slow_pick: float | None = None
    while clock.now - began < 10 * tau_ms / 1000:
        endpoint = balancer.pick()
        assert endpoint is not None
        if endpoint is slow:
            first_slow_pick = clock.now - began
            break
        call(balancer, endpoint, latency_s=0.001, clock=clock)  # the fast ones answer in 1 ms
    assert first_slow_pick is not None
    # 100 ms decays below the fast endpoints' ~1 ms after ln(100) = 4.6 time constants
    assert 3 * tau_ms / 1000 < first_slow_pick < 6 * tau_ms / 1000
    (view,) = [v for v in balancer.views() if v.address == C]
    assert view.ewma_ms < 1.5


def test_an_idle_endpoints_estimate_as_read_by_views_decays_in_time() -> None:
    balancer, clock, _ = make_balancer(1, settings=BalancerSettings(default_rtt_ms=1.0))
    call(balancer, by_address(balancer, A), latency_s=0.100, clock=clock)
    clock.advance(2 * BalancerSettings().ewma_decay_ms / 1000)
    (view,) = balancer.views()
    assert view.ewma_ms == pytest.approx(100.0 * math.exp(-2.0), rel=1e-3)


def test_finish_learns_from_the_latency_it_is_given_instead_of_the_call_duration() -> None:
    balancer, clock, _ = make_balancer(1, settings=BalancerSettings(default_rtt_ms=1.0))
    a = by_address(balancer, A)
    started = balancer.start(a)
    clock.advance(60.0)  # a long-lived stream whose first message came after 5 ms
    balancer.finish(a, started, failed=False, latency_s=0.005)
    assert a.load.estimate_ms == pytest.approx(5.0)
    started = balancer.start(a)
    clock.advance(0.200)
    balancer.finish(a, started, failed=False)  # default: the time since started
    assert a.load.estimate_ms == pytest.approx(200.0)


def test_new_endpoints_start_at_the_default_rtt() -> None:
    balancer, _, _ = make_balancer(3, settings=BalancerSettings(default_rtt_ms=42.0))
    assert [v.ewma_ms for v in balancer.views()] == [42.0, 42.0, 42.0]


def test_a_p2c_pick_reads_two_costs_whatever_the_number_of_endpoints(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    balancer, _, _ = make_balancer(5000)
    reads = 0
    original = PeakEwma.value

    def counting(self: PeakEwma, now: float, tau_s: float) -> float:
        nonlocal reads
        reads += 1
        return original(self, now, tau_s)

    monkeypatch.setattr(PeakEwma, "value", counting)
    for _ in range(100):
        balancer.pick()
    assert reads == 200


def test_p2c_spreads_equal_endpoints_evenly() -> None:
    balancer, _, _ = make_balancer(3, seed=11)
    picks = Counter(balancer.pick().address for _ in range(3000))  # type: ignore[union-attr]
    assert all(850 < count < 1150 for count in picks.values())


# --- single endpoint, empty set ----------------------------------------------------------------


@pytest.mark.parametrize("policy", ["p2c_ewma", "round_robin", "least_request"])
def test_a_single_active_endpoint_is_always_picked(policy: str) -> None:
    balancer, _, _ = make_balancer(1, settings=BalancerSettings(policy=policy))  # type: ignore[arg-type]
    only = by_address(balancer, A)
    assert {balancer.pick() for _ in range(20)} == {only}
    assert balancer.pick(avoid=[only]) is only  # all avoided: falls back to it


@pytest.mark.parametrize("policy", ["p2c_ewma", "round_robin", "least_request"])
def test_an_empty_set_picks_nothing(policy: str) -> None:
    balancer, _, _ = make_balancer(0, settings=BalancerSettings(policy=policy))  # type: ignore[arg-type]
    assert balancer.pick() is None
    balancer.update_endpoints({"x:1": "x"}, "dns")
    balancer.update_endpoints({}, "dns")
    assert balancer.pick() is None


# --- round_robin and least_request ---------------------------------------------------------------


def test_round_robin_gives_each_endpoint_a_third() -> None:
    balancer, clock, _ = make_balancer(3, settings=BalancerSettings(policy="round_robin"))
    picks = simulate(balancer, clock, {A: 0.001, B: 0.001, C: 0.100}, calls=3000, every_s=0.002)
    assert picks == {A: 1000, B: 1000, C: 1000}  # latency is not looked at


def test_round_robin_takes_the_endpoints_in_turn() -> None:
    balancer, _, _ = make_balancer(3, settings=BalancerSettings(policy="round_robin"))
    first_round = [balancer.pick() for _ in range(3)]
    assert len(set(first_round)) == 3
    assert [balancer.pick() for _ in range(3)] == first_round


def test_least_request_prefers_the_endpoint_with_fewer_calls_in_flight() -> None:
    balancer, _, _ = make_balancer(3, seed=2, settings=BalancerSettings(policy="least_request"))
    busy = by_address(balancer, A)
    for _ in range(5):
        balancer.start(busy)
    picks = Counter(balancer.pick().address for _ in range(600))  # type: ignore[union-attr]
    assert picks[A] == 0  # any pair holding A holds an endpoint with fewer in flight
    assert picks[B] > 200 and picks[C] > 200


def test_least_request_ignores_latency() -> None:
    balancer, clock, _ = make_balancer(3, seed=2, settings=BalancerSettings(policy="least_request"))
    call(balancer, by_address(balancer, C), latency_s=0.500, clock=clock)
    picks = Counter(balancer.pick().address for _ in range(3000))  # type: ignore[union-attr]
    assert all(850 < count < 1150 for count in picks.values())


# --- avoid ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["p2c_ewma", "round_robin", "least_request"])
def test_a_retry_prefers_an_endpoint_not_yet_tried(policy: str) -> None:
    balancer, _, _ = make_balancer(5, seed=4, settings=BalancerSettings(policy=policy))  # type: ignore[arg-type]
    tried = set(balancer.endpoints()[:3])
    for _ in range(200):
        assert balancer.pick(avoid=tried) not in tried


@pytest.mark.parametrize("policy", ["p2c_ewma", "round_robin", "least_request"])
def test_when_every_endpoint_was_tried_a_retry_still_gets_one(policy: str) -> None:
    balancer, _, _ = make_balancer(3, seed=4, settings=BalancerSettings(policy=policy))  # type: ignore[arg-type]
    everything = balancer.endpoints()
    assert {balancer.pick(avoid=everything) for _ in range(200)} <= set(everything)
    assert balancer.pick(avoid=everything) is not None


def test_with_one_endpoint_left_untried_p2c_always_finds_it() -> None:
    balancer, _, _ = make_balancer(50, seed=9)
    endpoints = balancer.endpoints()
    tried = endpoints[:49]  # a list: avoid is any collection
    assert {balancer.pick(avoid=tried) for _ in range(100)} == {endpoints[49]}
