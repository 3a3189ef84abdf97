"""Time-ordered event ids: UUID version 7, sortable by creation, even when the clock stalls."""

from __future__ import annotations

import uuid

from sidecar.ids import Uuid7Generator, uuid7


def test_ids_are_version_7_uuids_carrying_the_millisecond_time() -> None:
    generate = Uuid7Generator(clock_ms=lambda: 1_700_000_000_123)

    value = uuid.UUID(generate())

    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert value.int >> 80 == 1_700_000_000_123


def test_ids_strictly_increase_when_the_clock_stalls_or_steps_back() -> None:
    times = iter([5_000] * 5000 + [4_000] * 10)
    generate = Uuid7Generator(clock_ms=lambda: next(times))

    ids = [generate() for _ in range(5010)]

    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_ids_made_later_sort_later() -> None:
    now = [1_000]
    generate = Uuid7Generator(clock_ms=lambda: now[0])
    earlier = generate()
    now[0] += 1

    assert generate() > earlier


def test_default_generator_gives_canonical_strings() -> None:
    value = uuid7()
    assert str(uuid.UUID(value)) == value
