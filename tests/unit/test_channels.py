"""TimeoutStreak: the one "reopen the channel after N timeouts in a row" rule that the proxy's
endpoint connections and the event shipper's exporter share."""

from __future__ import annotations

import pytest

from sidecar.channels import TimeoutStreak


def test_says_reopen_at_the_limit_not_before() -> None:
    streak = TimeoutStreak(3)
    assert [streak.timed_out() for _ in range(3)] == [False, False, True]
    assert streak.count == 3


def test_keeps_saying_reopen_past_the_limit_until_reset() -> None:
    streak = TimeoutStreak(2)
    streak.timed_out()
    assert streak.timed_out()
    assert streak.timed_out()
    streak.reset()
    assert streak.count == 0
    assert not streak.timed_out()


def test_an_answer_in_between_starts_over() -> None:
    streak = TimeoutStreak(2)
    for _ in range(10):
        assert not streak.timed_out()
        streak.reset()
    assert streak.count == 0


def test_the_hot_path_attribute_store_is_a_reset() -> None:
    streak = TimeoutStreak(2)
    streak.timed_out()
    streak.count = 0  # what the proxy's data path does on any answer
    assert not streak.timed_out()


def test_a_limit_of_one_reopens_on_the_first_timeout() -> None:
    assert TimeoutStreak(1).timed_out()


@pytest.mark.parametrize("limit", [0, -1])
def test_a_limit_below_one_is_refused(limit: int) -> None:
    with pytest.raises(ValueError):
        TimeoutStreak(limit)
