"""The retention policy (pure): which prefix of a stream may go, found by binary search."""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.eventlog.retention.policy import NS_PER_DAY, Probe, RetentionPolicy, last_deletable

NOW_NS = 1_800_000_000 * 10**9


@st.composite
def streams(draw: st.DrawFn) -> tuple[int, list[Probe]]:
    """(first kept version, the kept events): store times and positions rising with versions."""
    first_kept = draw(st.integers(1, 50))
    count = draw(st.integers(0, 40))
    gaps_h = draw(st.lists(st.integers(0, 30), min_size=count, max_size=count))
    steps = draw(st.lists(st.integers(1, 5), min_size=count, max_size=count))
    events, at_ns, position = [], NOW_NS - 20 * NS_PER_DAY, first_kept + draw(st.integers(0, 99))
    for offset, (hours, step) in enumerate(zip(gaps_h, steps, strict=True)):
        at_ns += hours * NS_PER_DAY // 24
        position += step
        events.append(Probe(first_kept + offset, at_ns, position))
    return first_kept, events


policies = st.one_of(
    st.builds(RetentionPolicy, retain_days=st.floats(0.1, 25)),
    st.builds(RetentionPolicy, retain_events_per_stream=st.integers(1, 45)),
    st.builds(RetentionPolicy, retain_days=st.floats(0.1, 25),
              retain_events_per_stream=st.integers(1, 45)),
)


@given(stream=streams(), policy=policies, folded_through=st.integers(0, 400))
def test_the_prefix_found_is_exactly_the_events_a_rule_lets_go(
    stream: tuple[int, list[Probe]], policy: RetentionPolicy, folded_through: int
) -> None:
    first_kept, events = stream
    head = events[-1].version if events else first_kept - 1
    by_version = {e.version: e for e in events}
    reads: list[int] = []

    async def event_at(version: int) -> Probe | None:
        reads.append(version)
        return by_version.get(version)

    found = asyncio.run(last_deletable(policy, first_kept=first_kept, head_version=head,
                                       folded_through=folded_through, now_ns=NOW_NS,
                                       event_at=event_at))

    expected = first_kept - 1
    for e in events:  # brute force: the longest prefix where every event may go
        if e.global_position > folded_through or not policy.past_retention(
                e.recorded_at_ns, e.version, head, NOW_NS):
            break
        expected = e.version
    assert found == expected
    assert len(reads) <= 2 + math.ceil(math.log2(len(events) + 1))


def test_count_rule_keeps_the_newest_n_and_age_rule_the_recent_days() -> None:
    policy = RetentionPolicy(retain_days=2, retain_events_per_stream=3)
    young = NOW_NS - NS_PER_DAY
    old = NOW_NS - 3 * NS_PER_DAY
    assert policy.past_retention(young, version=7, head_version=10, now_ns=NOW_NS)
    assert not policy.past_retention(young, version=8, head_version=10, now_ns=NOW_NS)
    assert policy.past_retention(old, version=10, head_version=10, now_ns=NOW_NS)
    assert policy.describe() == "2 days or 3 events per stream"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give retain_days, retain_events_per_stream or both"),
        ({"retain_days": 0}, "retain_days: must be a finite number > 0"),
        ({"retain_days": math.nan}, "retain_days: must be a finite number > 0"),
        ({"retain_days": math.inf}, "retain_days: must be a finite number > 0"),
        ({"retain_events_per_stream": 0}, "retain_events_per_stream: must be >= 1"),
        ({"retain_days": 1, "interval_s": 0}, "retention_interval_s: must be"),
        ({"retain_days": 1, "cut_events": 0}, "retention_cut_events: must be >= 1"),
    ],
)
def test_a_bad_policy_names_the_setting(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetentionPolicy(**kwargs)  # type: ignore[arg-type]
