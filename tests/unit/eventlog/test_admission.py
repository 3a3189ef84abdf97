"""Append admission: at most ``max_pending`` requests at once, the rest refused with a retry hint
that grows with the backlog, is bounded, and is jittered (hand-moved clock, seeded rng)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from sidecar.eventlog.api.admission import Admitted, AppendAdmission, Refusal
from sidecar.eventlog.metrics import (
    AppendCounters,
    CountersSnapshot,
    EventLogCollector,
    MetricsSnapshot,
)
from sidecar.eventlog.settings import DEFAULT_MAX_PENDING_APPENDS, ServerSettings
from sidecar.resilience.pushback import PUSHBACK_KEY, parse_pushback
from tests.support.fake_clock import FakeClock


def _admission(limit: int, clock: FakeClock, *, jitter: float = 0.0, seed: int = 1,
               ) -> AppendAdmission:
    return AppendAdmission(limit, clock=clock, rng=random.Random(seed), jitter=jitter,
                           min_hint_s=0.05, max_hint_s=5.0, refused_half_life_s=1.0)


def test_requests_up_to_the_limit_are_admitted_and_the_next_is_refused_at_once() -> None:
    clock = FakeClock()
    admission = _admission(3, clock)

    tickets = [admission.admit() for _ in range(3)]
    refused = admission.admit()

    assert all(isinstance(t, Admitted) for t in tickets)
    assert isinstance(refused, Refusal)
    assert (refused.pending, refused.max_pending, refused.reason) == (3, 3, "overloaded")
    assert admission.pending == 3 and admission.refused == 1


def test_a_released_request_makes_room_for_the_next() -> None:
    clock = FakeClock()
    admission = _admission(1, clock)
    first = admission.admit()
    assert isinstance(first, Admitted)
    assert isinstance(admission.admit(), Refusal)

    admission.release(first)

    assert isinstance(admission.admit(), Admitted)


def test_release_without_admit_is_a_bug_that_raises() -> None:
    admission = _admission(1, FakeClock())
    with pytest.raises(RuntimeError, match="release without"):
        admission.release(Admitted(0.0))


def test_the_refusal_names_the_limit_says_nothing_was_stored_and_carries_the_a6_trailer() -> None:
    clock = FakeClock()
    admission = _admission(2, clock)
    admission.admit(), admission.admit()

    refused = admission.admit()

    assert isinstance(refused, Refusal)
    assert "overloaded" in refused.message and "max_pending_appends 2" in refused.message
    assert "nothing was stored" in refused.message
    assert f"retry in {refused.retry_after_ms} ms" in refused.message
    (key, value), = refused.trailing_metadata()
    assert key == PUSHBACK_KEY
    assert parse_pushback([value]) == refused.retry_after_ms / 1000


def test_the_hint_is_the_drain_time_of_the_backlog_by_littles_law() -> None:
    clock = FakeClock()
    admission = _admission(4, clock)
    tickets = [admission.admit() for _ in range(4)]
    clock.advance(0.2)
    for ticket in tickets:  # 4 requests that took 0.2 s each: the mean moves towards 0.2 s
        assert isinstance(ticket, Admitted)
        admission.release(ticket)
    latency = admission.latency_s
    assert 0.05 < latency < 0.2
    for _ in range(4):
        admission.admit()

    refused = admission.admit()

    # backlog = 4 pending + 1 refused: 5 requests at 4 per `latency` seconds
    assert isinstance(refused, Refusal)
    assert refused.retry_after_ms == round(latency * 5 / 4 * 1000)


def test_the_hint_grows_with_refusals_and_decays_when_they_stop() -> None:
    clock = FakeClock()
    admission = _admission(2, clock)
    admission.admit(), admission.admit()
    hints = []
    for _ in range(20):
        refused = admission.admit()
        assert isinstance(refused, Refusal)
        hints.append(refused.retry_after_ms)
    assert hints == sorted(hints) and hints[-1] > hints[0]

    clock.advance(10.0)  # ten half-lives without a refusal: the backlog is forgotten

    assert admission.hint_s(clock()) < hints[-1] / 1000 / 5


def test_the_hint_is_bounded_by_min_and_max() -> None:
    clock = FakeClock()
    admission = _admission(1, clock)
    for _ in range(50):  # instant Appends: the mean latency falls towards 0
        ticket = admission.admit()
        assert isinstance(ticket, Admitted)
        admission.release(ticket)
    admission.admit()
    first = admission.admit()
    assert isinstance(first, Refusal) and first.retry_after_ms == 50  # min_hint_s 0.05

    slow = _admission(1, clock)
    ticket = slow.admit()
    clock.advance(2.0)  # a slow store
    assert isinstance(ticket, Admitted)
    slow.release(ticket)
    slow.admit()
    for _ in range(10_000):
        last = slow.admit()
    assert isinstance(last, Refusal) and last.retry_after_ms == 5000  # max_hint_s 5.0


def test_jitter_spreads_the_hints_of_requests_refused_together() -> None:
    clock = FakeClock()
    admission = _admission(1, clock, jitter=0.25)
    ticket = admission.admit()
    clock.advance(2.0)
    assert isinstance(ticket, Admitted)
    admission.release(ticket)
    admission.admit()
    for _ in range(10_000):
        admission.admit()  # saturate at the max: without jitter every hint would be 5000 ms
    hints = []
    for _ in range(200):
        refused = admission.admit()
        assert isinstance(refused, Refusal)
        hints.append(refused.retry_after_ms)

    assert min(hints) >= 3750 and max(hints) <= 6250
    assert len(set(hints)) > 100  # 200 shippers do not come back in lockstep


@pytest.mark.parametrize("kwargs, problem", [
    (dict(max_pending=0), "max_pending_appends: must be >= 1"),
    (dict(max_pending=1, jitter=1.0), "jitter"),
    (dict(max_pending=1, min_hint_s=0.0), "hint bounds"),
    (dict(max_pending=1, min_hint_s=2.0, max_hint_s=1.0), "hint bounds"),
    (dict(max_pending=1, refused_half_life_s=0.0), "refused_half_life_s"),
])
def test_bad_parameters_are_refused_naming_them(kwargs: dict[str, float], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        AppendAdmission(**kwargs)  # type: ignore[arg-type]


def test_the_server_setting_has_a_default_and_refuses_zero() -> None:
    assert ServerSettings(store_url="sqlite:///x.db").max_pending_appends == (
        DEFAULT_MAX_PENDING_APPENDS)
    with pytest.raises(ValueError, match="max_pending_appends: must be >= 1, got 0"):
        ServerSettings(store_url="sqlite:///x.db", max_pending_appends=0)


def test_the_refused_counter_starts_at_zero_for_every_reason_and_counts() -> None:
    counters = AppendCounters()
    assert counters.copy().appends_refused == {"overloaded": 0}
    assert CountersSnapshot().appends_refused == {"overloaded": 0}
    counters.refused("overloaded")
    assert counters.copy().appends_refused == {"overloaded": 1}
    assert counters.copy().requests["ok"] == 0  # a refusal never reached the store


# --- properties ------------------------------------------------------------------------------

_OPS = st.lists(st.tuples(st.sampled_from(["admit", "release", "wait"]),
                          st.floats(min_value=0.0, max_value=3.0)), max_size=200)


@settings(max_examples=200, deadline=None)
@given(limit=st.integers(min_value=1, max_value=8), ops=_OPS, jitter=st.floats(0.0, 0.9),
       seed=st.integers(0, 2**32 - 1))
def test_pending_never_exceeds_the_limit_and_every_hint_is_within_its_bounds(
        limit: int, ops: list[tuple[str, float]], jitter: float, seed: int) -> None:
    clock = FakeClock()
    admission = _admission(limit, clock, jitter=jitter, seed=seed)
    held: list[Admitted] = []
    refusals = 0
    for op, seconds in ops:
        if op == "admit":
            before = admission.pending
            ticket = admission.admit()
            if isinstance(ticket, Refusal):
                refusals += 1
                assert before == limit and admission.pending == limit
                assert 0.05 * (1 - jitter) * 1000 - 1 <= ticket.retry_after_ms
                assert ticket.retry_after_ms <= 5.0 * (1 + jitter) * 1000 + 1
            else:
                assert before < limit
                held.append(ticket)
        elif op == "release" and held:
            admission.release(held.pop(0))
        else:
            clock.advance(seconds)
        assert 0 <= admission.pending <= limit
        assert admission.pending == len(held)
    assert admission.refused == refusals
    for ticket in held:
        admission.release(ticket)
    assert admission.pending == 0


@settings(max_examples=200, deadline=None)
@given(limit=st.integers(min_value=1, max_value=50), extra=st.integers(0, 500),
       latency_s=st.floats(0.0, 10.0))
def test_without_jitter_the_hint_never_shrinks_while_refusals_keep_coming(
        limit: int, extra: int, latency_s: float) -> None:
    clock = FakeClock()
    admission = _admission(limit, clock)
    first = admission.admit()
    clock.advance(latency_s)
    assert isinstance(first, Admitted)
    admission.release(first)
    for _ in range(limit):
        admission.admit()
    hints = []
    for _ in range(extra):
        refused = admission.admit()
        assert isinstance(refused, Refusal)
        hints.append(refused.retry_after_ms)
    assert hints == sorted(hints)


def test_refusals_and_pending_appends_are_exported_from_the_counters() -> None:
    counters = AppendCounters()
    registry = CollectorRegistry()
    registry.register(EventLogCollector(lambda: MetricsSnapshot(counters=counters.copy())))
    assert registry.get_sample_value("eventlog_appends_refused_total",
                                     {"reason": "overloaded"}) == 0
    assert registry.get_sample_value("eventlog_appends_pending") == 0

    counters.refused("overloaded")
    counters.appends_pending = 3

    assert registry.get_sample_value("eventlog_appends_refused_total",
                                     {"reason": "overloaded"}) == 1
    assert registry.get_sample_value("eventlog_appends_pending") == 3
