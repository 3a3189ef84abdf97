"""The adaptive limit in the guard: breaker, then limiter, then the ceiling; a shed call is
answered at once and never counted against the breaker; settle teaches the limiter."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

from sidecar.breaker import BreakerSettings
from sidecar.protection import (
    MD_OVERFLOW,
    Admission,
    BreakerRegistry,
    GuardSettings,
    Rejection,
    UpstreamGuard,
    admit,
    status_codes,
)
from sidecar.resilience import SheddingChange
from sidecar.resilience.limits import LimitSettings
from tests.support.fake_clock import FakeClock

LIMIT = LimitSettings(initial_limit=2, min_limit=1, quiet_ms=100)


@dataclass
class Target:
    guard: UpstreamGuard


@dataclass
class Scope:
    events: list[str] = field(default_factory=list)

    def shed(self, limit: int, in_flight: int) -> None:
        self.events.append(f"shed:{limit}:{in_flight}")

    def overflow(self) -> None:
        self.events.append("overflow")


@dataclass
class Recorder:
    changes: list[SheddingChange] = field(default_factory=list)

    def on_shedding(self, change: SheddingChange) -> None:
        self.changes.append(change)


def _guard(clock: FakeClock, recorder: Recorder, adaptive: LimitSettings | None = LIMIT,
           ceiling: int = 10) -> UpstreamGuard:
    settings = GuardSettings(breaker=BreakerSettings(), failure_codes=status_codes(
        ["UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"]), per_method=False,
        max_concurrent_requests=ceiling, adaptive=adaptive)
    return UpstreamGuard("pay", settings, BreakerRegistry(clock=clock),
                         shedding_listeners=[recorder], clock=clock)


def _admit(target: Target, scope: Scope) -> Admission | Rejection:
    decision = admit(target, "/p.S/M", scope, lambda _: None)  # type: ignore[arg-type]
    return decision if isinstance(decision, Rejection) else decision[1]


def test_a_call_over_the_adaptive_limit_is_shed_at_once_and_not_counted_by_the_breaker(
) -> None:
    clock, recorder, scope = FakeClock(), Recorder(), Scope()
    target = Target(_guard(clock, recorder))
    first, second = _admit(target, scope), _admit(target, scope)
    shed = _admit(target, scope)
    assert isinstance(first, Admission) and isinstance(second, Admission)
    assert isinstance(shed, Rejection)
    assert shed.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (MD_OVERFLOW, "true") in shed.trailing_metadata
    assert shed.reason == "shed"
    assert scope.events == ["shed:2:2"]
    breaker = target.guard.breaker
    assert breaker is not None and breaker.view().snapshot.calls == 0
    assert target.guard.bulkhead.in_flight == 2  # the shed call never took a ceiling slot
    assert [c.phase for c in recorder.changes] == ["started"]
    first.settle(grpc.StatusCode.OK, 0.02)
    second.settle(None, 0.0)
    limiter = target.guard.limiter
    assert limiter is not None and (limiter.in_flight, limiter.shed_total) == (0, 1)
    clock.advance(0.2)
    limiter.poll()
    assert [c.phase for c in recorder.changes] == ["started", "stopped"]


def test_the_ceiling_still_applies_and_frees_the_limiter_slot() -> None:
    clock, recorder, scope = FakeClock(), Recorder(), Scope()
    target = Target(_guard(clock, recorder, LimitSettings(initial_limit=5, min_limit=1),
                           ceiling=5))
    target.guard.bulkhead.limit = 1  # as if a reload had just lowered the ceiling
    assert isinstance(_admit(target, scope), Admission)
    assert isinstance(_admit(target, scope), Rejection)
    assert scope.events == ["overflow"]
    assert target.guard.limiter is not None and target.guard.limiter.in_flight == 1


def test_a_dropped_call_lowers_the_limit() -> None:
    clock, recorder, scope = FakeClock(), Recorder(), Scope()
    # one call per sample window, so each drop moves the limit (the default window is 10 calls)
    target = Target(_guard(clock, recorder, LimitSettings(initial_limit=8, min_limit=1,
                                                          window_ms=0.0, window_samples=1)))
    admissions = [_admit(target, scope) for _ in range(8)]
    for admission in admissions:
        assert isinstance(admission, Admission)
        admission.settle(grpc.StatusCode.RESOURCE_EXHAUSTED, 0.001)
    assert target.guard.limiter is not None and target.guard.limiter.limit < 8


def test_reconfigure_keeps_the_limiter_replaces_it_or_drops_it() -> None:
    clock, recorder, scope = FakeClock(), Recorder(), Scope()
    guard = _guard(clock, recorder)
    target = Target(guard)
    held = [_admit(target, scope) for _ in range(3)]  # two admitted, one shed: a period opens
    limiter = guard.limiter
    settings = guard.settings
    guard.reconfigure(GuardSettings(**{**_fields(settings), "adaptive": LimitSettings(
        initial_limit=3, min_limit=1, quiet_ms=100)}))
    assert guard.limiter is limiter and limiter is not None and limiter.shed_total == 1
    guard.reconfigure(GuardSettings(**{**_fields(settings), "adaptive": None}))
    assert guard.limiter is None
    assert [c.phase for c in recorder.changes] == ["started", "stopped"]
    for admission in held:  # calls admitted before still settle on the limiter they hold
        if isinstance(admission, Admission):
            admission.settle(grpc.StatusCode.OK, 0.01)
    assert limiter.in_flight == 0
    guard.reconfigure(settings)
    assert guard.limiter is not None and guard.limiter is not limiter


def _fields(settings: GuardSettings) -> dict[str, object]:
    return {name: getattr(settings, name) for name in GuardSettings.__dataclass_fields__}
