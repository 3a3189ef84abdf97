"""The bound counter and histogram updates (sidecar.telemetry._fast_metrics) leave exactly the
samples prometheus_client's own ``inc`` and ``observe`` leave."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram

from sidecar.telemetry._fast_metrics import LatencyBuckets, counter_value
from sidecar.telemetry.metrics import DEFAULT_DURATION_BUCKETS_S

ON_A_BOUND = st.sampled_from(DEFAULT_DURATION_BUCKETS_S)
DURATIONS = st.one_of(ON_A_BOUND, st.floats(min_value=-1.0, max_value=100.0),
                      st.just(math.inf), st.just(math.nan))


def _samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in registry.collect()
            for s in family.samples if not s.name.endswith("_created")]


def _same(a: list[tuple[str, dict[str, str], float]],
          b: list[tuple[str, dict[str, str], float]]) -> bool:
    return len(a) == len(b) and all(
        x[:2] == y[:2] and (x[2] == y[2] or (math.isnan(x[2]) and math.isnan(y[2])))
        for x, y in zip(a, b, strict=True))


@given(st.lists(DURATIONS, max_size=40))
def test_latency_buckets_count_a_duration_where_observe_does(durations: list[float]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = Histogram("d", "d", ["u"], buckets=DEFAULT_DURATION_BUCKETS_S, registry=ours)
    plain = Histogram("d", "d", ["u"], buckets=DEFAULT_DURATION_BUCKETS_S, registry=theirs)
    buckets, child = LatencyBuckets(fast.labels("a")), plain.labels("a")
    for duration in durations:
        buckets.observe(duration)
        child.observe(duration)
    assert _same(_samples(ours), _samples(theirs))


def test_a_bound_counter_value_counts_like_inc() -> None:
    registry = CollectorRegistry()
    counter = Counter("c", "c", ["u"], registry=registry)
    value = counter_value(counter.labels("a"))
    assert value is not counter.labels("a")  # the value itself, not the checking wrapper
    for _ in range(3):
        value.inc(1)
    counter.labels("a").inc()
    assert registry.get_sample_value("c_total", {"u": "a"}) == 4.0


def test_a_child_of_another_shape_falls_back_to_the_public_methods() -> None:
    class Child:
        def __init__(self) -> None:
            self.observed: list[float] = []

        def observe(self, amount: float) -> None:
            self.observed.append(amount)

        def inc(self, amount: float = 1) -> None:
            self.observed.append(amount)

    child = Child()
    LatencyBuckets(child).observe(0.5)  # type: ignore[arg-type]
    assert counter_value(child) is child  # type: ignore[arg-type]
    assert child.observed == [0.5]
