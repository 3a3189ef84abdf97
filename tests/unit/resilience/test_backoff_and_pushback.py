"""Backoff delays grow, are capped and jittered; the server's pushback is parsed as gRFC A6 says."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.resilience import STOP, Backoff, parse_pushback


def test_delays_grow_by_the_multiplier_and_stop_at_the_cap() -> None:
    backoff = Backoff(0.025, 0.250, 2.0, 0.0)
    assert [backoff.delay_s(n) for n in range(1, 7)] == pytest.approx(
        [0.025, 0.05, 0.1, 0.2, 0.25, 0.25])
    assert backoff.delay_s(10_000) == pytest.approx(0.25)  # no float overflow


@given(retry=st.integers(min_value=1, max_value=100), draw=st.floats(min_value=0.0, max_value=1.0))
def test_jitter_stays_within_its_fraction_and_under_the_cap(retry: int, draw: float) -> None:
    backoff = Backoff(0.025, 0.250, 2.0, 0.2, random=lambda: draw)
    plain = min(0.025 * 2.0 ** min(retry - 1, 64), 0.250)
    delay = backoff.delay_s(retry)
    assert plain * 0.8 - 1e-12 <= delay <= min(plain * 1.2, 0.250) + 1e-12


def test_bad_backoff_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="base_s"):
        Backoff(0.5, 0.1, 2.0, 0.0)
    with pytest.raises(ValueError, match="multiplier"):
        Backoff(0.1, 0.5, 0.5, 0.0)
    with pytest.raises(ValueError, match="jitter"):
        Backoff(0.1, 0.5, 2.0, 1.5)
    with pytest.raises(ValueError, match="counts from 1"):
        Backoff(0.1, 0.5, 2.0, 0.0).delay_s(0)


@pytest.mark.parametrize(("values", "expected"), [
    ([], None),
    (["0"], 0.0),
    (["250"], 0.25),
    ([" 1500 "], 1.5),
    (["-1"], STOP),
    (["abc"], STOP),
    (["1.5"], STOP),
    ([""], STOP),
    (["10", "20"], STOP),
    (["99999999999"], STOP),
])
def test_pushback(values: list[str], expected: object) -> None:
    assert parse_pushback(values) == expected


@given(st.text(max_size=12))
def test_any_pushback_text_is_a_delay_or_a_stop(text: str) -> None:
    parsed = parse_pushback([text])
    assert parsed is STOP or (isinstance(parsed, float) and parsed >= 0)
