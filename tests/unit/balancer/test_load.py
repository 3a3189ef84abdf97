"""PeakEwma: a time-decayed, peak-sensitive latency estimate (Linkerd's load estimate)."""

from __future__ import annotations

import math

import pytest

from sidecar.balancer import PeakEwma

TAU_S = 10.0


def test_a_new_estimate_reads_its_initial_value() -> None:
    assert PeakEwma(30.0, now=5.0).value(5.0, TAU_S) == 30.0


def test_an_observation_above_the_estimate_replaces_it_at_once() -> None:
    load = PeakEwma(30.0, now=0.0)
    load.observe(250.0, now=0.001, tau_s=TAU_S)
    assert load.value(0.001, TAU_S) == 250.0


def test_an_observation_below_weighs_by_the_time_since_the_last_one() -> None:
    load = PeakEwma(100.0, now=0.0)
    load.observe(10.0, now=TAU_S, tau_s=TAU_S)  # one time constant later
    w = math.exp(-1.0)
    assert load.estimate_ms == pytest.approx(100.0 * w + 10.0 * (1 - w))


def test_many_low_observations_in_the_same_instant_barely_move_the_estimate() -> None:
    load = PeakEwma(100.0, now=0.0)
    for _ in range(1000):
        load.observe(1.0, now=0.0, tau_s=TAU_S)
    assert load.estimate_ms == 100.0


def test_reading_decays_the_estimate_toward_zero_for_the_idle_time() -> None:
    load = PeakEwma(100.0, now=0.0)
    assert load.value(3 * TAU_S, TAU_S) == pytest.approx(100.0 * math.exp(-3.0))
    assert load.estimate_ms == 100.0  # a read changes nothing


def test_a_read_at_an_earlier_time_than_the_last_update_is_not_inflated() -> None:
    load = PeakEwma(40.0, now=10.0)
    assert load.value(9.0, TAU_S) == 40.0


def test_reset_starts_over_from_the_given_value() -> None:
    load = PeakEwma(500.0, now=0.0)
    load.reset(30.0, now=7.0)
    assert (load.estimate_ms, load.updated_at) == (30.0, 7.0)
