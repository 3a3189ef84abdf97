"""Vegas on the simulated saturating server: bounded under overload, down on drops, and the
probe that relearns the no-load RTT."""

from __future__ import annotations

import random

from sidecar.resilience.limits import AdaptiveLimiter, LimitSettings, VegasLimit
from tests.support.fake_clock import FakeClock
from tests.unit.resilience.limits._sim import simulate


def test_stays_far_below_the_ceiling_under_64_callers_on_a_capacity_of_8() -> None:
    clock = FakeClock()
    limiter = AdaptiveLimiter(LimitSettings(algorithm="vegas"), upstream="orders",
                              ceiling=1000, clock=clock, rng=random.Random(7))
    run = simulate(limiter, clock, [(2.0, 2), (12.0, 64)])
    settled = run.limits_between(5.0, 12.0)
    assert settled and all(4 <= limit <= 48 for limit in settled), settled
    assert limiter.algorithm == "vegas"


def test_grows_while_there_is_no_queue() -> None:
    limit = VegasLimit(LimitSettings(algorithm="vegas"), max_limit=1000, rng=random.Random(1))
    for _ in range(30):
        limit.update(0.020, in_flight=20, dropped=False)
    assert limit.limit > 20


def test_shrinks_on_drops() -> None:
    limit = VegasLimit(LimitSettings(algorithm="vegas"), max_limit=1000, rng=random.Random(1))
    limit.update(0.020, in_flight=20, dropped=False)
    for _ in range(20):
        limit.update(0.020, in_flight=20, dropped=True)
    assert limit.limit < 20


def test_the_probe_relearns_the_no_load_rtt() -> None:
    limit = VegasLimit(LimitSettings(algorithm="vegas"), max_limit=1000, rng=random.Random(1))
    limit.update(0.010, in_flight=20, dropped=False)
    for _ in range(2000):  # the upstream got slower for good
        limit.update(0.050, in_flight=1, dropped=False)
    assert limit.no_load_rtt_s == 0.050
