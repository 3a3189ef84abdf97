"""Append's checks of ``LoadShedding`` and ``LogRollbackDetected``: valid ones pass and keep
their upstream filter column; each broken field is refused with its path and the problem."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sidecar import chain
from sidecar.eventlog.api.payload_checks import MAX_DURATION_MS
from sidecar.eventlog.api.validation import InvalidField, validate_event
from sidecar.eventlog.event_protos import new_event_from_proto
from sidecar.v1 import events_pb2
from tests.contract.resilience_events import load_shedding, log_rollback_detected
from tests.support.events import StreamFactory, to_proto


def _event(kind: str) -> events_pb2.Event:
    producer = StreamFactory("checkout", "pod-1")
    made = load_shedding(producer) if kind == "load_shedding" else log_rollback_detected(producer)
    event: events_pb2.Event = to_proto(made)
    return event


def test_valid_shedding_and_rollback_events_pass_with_their_upstream_column() -> None:
    shedding = _event("load_shedding")
    rollback = _event("log_rollback_detected")
    validate_event(shedding)
    validate_event(rollback)
    assert new_event_from_proto(shedding).upstream == "payments"
    assert new_event_from_proto(rollback).upstream == ""


def _set(kind: str, **fields: object) -> Callable[[events_pb2.Event], None]:
    def mutate(event: events_pb2.Event) -> None:
        for name, value in fields.items():
            setattr(getattr(event, kind), name, value)
    return mutate


@pytest.mark.parametrize(("kind", "fields", "path", "problem"), [
    ("load_shedding", {"upstream": ""}, "load_shedding.upstream", "must not be empty"),
    ("load_shedding", {"phase": "paused"}, "load_shedding.phase", "started, stopped"),
    ("load_shedding", {"limit": 0}, "load_shedding.limit", ">= 1"),
    ("load_shedding", {"algorithm": ""}, "load_shedding.algorithm", "must not be empty"),
    ("load_shedding", {"duration_ms": 5}, "load_shedding.duration_ms", "0 when a period starts"),
    ("load_shedding", {"phase": "stopped", "duration_ms": MAX_DURATION_MS + 1},
     "load_shedding.duration_ms", "more than a year"),
    ("log_rollback_detected", {"stream": ""}, "log_rollback_detected.stream", "must not be empty"),
    ("log_rollback_detected", {"reason": "oops"}, "log_rollback_detected.reason",
     "head_behind, hash_mismatch"),
    ("log_rollback_detected", {"found_version": 12}, "log_rollback_detected.found_version",
     "not behind"),
    ("log_rollback_detected", {"lost": 13}, "log_rollback_detected.lost", "more than the 12"),
])
def test_a_broken_field_is_refused_naming_it(
    kind: str, fields: dict[str, object], path: str, problem: str
) -> None:
    event = _event(kind)
    _set(kind, **fields)(event)
    event.hash = chain.proto_hash(event)
    with pytest.raises(InvalidField) as caught:
        validate_event(event)
    assert path in caught.value.field
    assert problem in str(caught.value)


def test_a_stopped_period_may_carry_its_duration() -> None:
    event = _event("load_shedding")
    _set("load_shedding", phase="stopped", duration_ms=3_000, shed=400)(event)
    event.hash = chain.proto_hash(event)
    validate_event(event)
