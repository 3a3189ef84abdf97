"""Gradient2 on a simulated server with fixed capacity and latency rising with load, on a fake
clock: it settles near the capacity, holds while the overload lasts, and rises back after."""

from __future__ import annotations

import statistics

import pytest

from sidecar.resilience.limits import AdaptiveLimiter, Gradient2Limit, LimitSettings
from tests.support.fake_clock import FakeClock
from tests.unit.resilience.limits._sim import simulate

CAPACITY = 8
SERVICE_S = 0.020
UNLOADED, OVERLOAD, RECOVERY = (0.0, 2.0), (2.0, 12.0), (12.0, 17.0)
PHASES = [(UNLOADED[1], 2), (OVERLOAD[1], 64), (RECOVERY[1], 12)]


def _limiter(clock: FakeClock, **settings: object) -> AdaptiveLimiter:
    return AdaptiveLimiter(LimitSettings(**settings),  # type: ignore[arg-type]
                           upstream="orders", ceiling=1000, clock=clock)


def test_settles_between_6_and_24_under_64_callers_on_a_capacity_of_8() -> None:
    clock = FakeClock()
    run = simulate(_limiter(clock), clock, PHASES, capacity=CAPACITY, service_s=SERVICE_S)
    settled = run.limits_between(OVERLOAD[0] + 3.0, OVERLOAD[1])
    assert settled and all(6 <= limit <= 24 for limit in settled), settled
    assert run.shed > 0


def test_admitted_calls_wait_at_most_one_service_time_in_the_queue() -> None:
    clock = FakeClock()
    run = simulate(_limiter(clock), clock, PHASES, capacity=CAPACITY, service_s=SERVICE_S)
    unloaded = statistics.median(run.rtts_between(*UNLOADED))
    loaded = statistics.median(run.rtts_between(OVERLOAD[0] + 3.0, OVERLOAD[1]))
    assert unloaded == pytest.approx(SERVICE_S)
    assert loaded <= 2 * unloaded + 1e-9, (unloaded, loaded)


def test_the_limit_rises_back_when_the_load_drops() -> None:
    clock = FakeClock()
    run = simulate(_limiter(clock), clock, PHASES, capacity=CAPACITY, service_s=SERVICE_S)
    overloaded = max(run.limits_between(OVERLOAD[0] + 3.0, OVERLOAD[1]))
    recovered = run.limits_between(RECOVERY[1] - 1.0, RECOVERY[1])
    assert min(recovered) > overloaded, (overloaded, recovered)


def test_without_the_up_guard_the_baseline_would_drift_but_here_it_holds() -> None:
    # Ten seconds of overload: the long-window RTT stays at the unloaded RTT it learned.
    clock = FakeClock()
    limiter = _limiter(clock)
    simulate(limiter, clock, PHASES[:2], capacity=CAPACITY, service_s=SERVICE_S)
    algorithm = limiter.limit_algorithm
    assert isinstance(algorithm, Gradient2Limit)
    assert algorithm.long_rtt_s == pytest.approx(SERVICE_S, rel=0.05)


def test_a_slower_upstream_is_followed_from_min_limit() -> None:
    # Learned at 20 ms, then the upstream serves in 200 ms for good: the limit drops to
    # min_limit, relearns the RTT there and climbs back to a working limit (not stuck).
    clock = FakeClock()
    limiter = _limiter(clock)
    simulate(limiter, clock, [(2.0, 2)], capacity=CAPACITY, service_s=SERVICE_S)
    run = simulate(limiter, clock, [(60.0, 64)], capacity=CAPACITY, service_s=0.200)
    late = run.limits_between(40.0, 60.0)
    assert all(CAPACITY <= limit <= 3 * CAPACITY for limit in late), late


def test_is_app_limited_below_half_the_limit() -> None:
    limit = Gradient2Limit(LimitSettings(), max_limit=1000)
    for _ in range(50):
        limit.update(0.5, in_flight=3, dropped=False)  # slow, but only 3 of 20 in flight
    assert limit.limit == 20


def test_a_dropped_call_lowers_the_limit_and_teaches_nothing() -> None:
    limit = Gradient2Limit(LimitSettings(), max_limit=1000)
    for _ in range(20):
        limit.update(0.020, in_flight=20, dropped=False)
    before, long_rtt = limit.estimate, limit.long_rtt_s
    limit.update(5.0, in_flight=20, dropped=True)
    assert limit.estimate < before
    assert limit.long_rtt_s == long_rtt


def test_stays_within_min_limit_and_the_ceiling() -> None:
    fast = Gradient2Limit(LimitSettings(initial_limit=20), max_limit=25)
    for _ in range(500):
        fast.update(0.001, in_flight=25, dropped=False)
    assert fast.limit == 25
    slow = Gradient2Limit(LimitSettings(min_limit=4), max_limit=1000)
    for _ in range(500):
        slow.update(0.001 if slow.long_rtt_s == 0 else 10.0, in_flight=20, dropped=True)
    assert slow.limit == 4


def test_the_long_rtt_falls_quickly_once_calls_are_fast_again() -> None:
    limit = Gradient2Limit(LimitSettings(), max_limit=1000)
    for _ in range(10):
        limit.update(0.200, in_flight=1, dropped=False)
    for _ in range(60):
        limit.update(0.020, in_flight=1, dropped=False)
    # the EWMA alone (600 samples) would still be near 0.2 s; the drift guard cuts it
    assert limit.long_rtt_s < 0.05
