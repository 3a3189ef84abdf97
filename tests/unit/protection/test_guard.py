"""The shared protection logic: admission, fallbacks, the concurrency limit, outcome counting,
and breakers kept across reloads. Real breakers, fake clock, no sleeping."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import grpc
import pytest

from sidecar.breaker import BreakerListener, BreakerSettings, Mode, State, Transition
from sidecar.protection import (
    Admission,
    BreakerRegistry,
    GuardSettings,
    MetadataItem,
    Rejection,
    UpstreamGuard,
    admit,
    status_codes,
)
from sidecar.protection import guard as guard_module

FAILURES = status_codes(["UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL"])
TRIPPY = BreakerSettings(window_size=2, minimum_calls=2, consecutive_failures=None,
                         open_base_ms=1000, open_jitter=0.0, half_open_probes=1)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Target:
    guard: UpstreamGuard


@dataclass
class Scope:
    events: list[str] = field(default_factory=list)

    def outgoing_metadata(self, metadata: list[MetadataItem]) -> None:
        pass

    def rejected(self, reason: str, retry_after_ms: int) -> None:
        self.events.append(f"rejected:{reason}:{retry_after_ms}")

    def fallback(self, kind: str, target: str) -> None:
        self.events.append(f"fallback:{kind}:{target}")

    def overflow(self) -> None:
        self.events.append("overflow")

    def endpoint(self, address: str) -> None:
        pass

    def finish(self, code: grpc.StatusCode, duration_s: float) -> None:
        pass


def _settings(**overrides: object) -> GuardSettings:
    base = GuardSettings(breaker=TRIPPY, failure_codes=FAILURES, per_method=False,
                         max_concurrent_requests=10)
    return replace(base, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry(clock: Clock) -> BreakerRegistry:
    return BreakerRegistry(clock=clock, wall_clock=lambda: 1_700_000_000.0)


def _targets(registry: BreakerRegistry, **settings: GuardSettings) -> dict[str, Target]:
    return {name: Target(UpstreamGuard(name, s, registry)) for name, s in settings.items()}


def _call(target: Target, targets: dict[str, Target], code: grpc.StatusCode | None,
          method: str = "/p.S/M") -> tuple[Target, Admission] | Rejection:
    decision = admit(target, method, Scope(), targets.get)
    if not isinstance(decision, Rejection):
        decision[1].settle(code, 0.01)
    return decision


def _trip(target: Target, targets: dict[str, Target], method: str = "/p.S/M") -> None:
    for _ in range(2):
        _call(target, targets, grpc.StatusCode.UNAVAILABLE, method)
    assert target.guard.breaker_for(method).state is State.OPEN


def test_admitted_call_holds_a_slot_until_settled(registry: BreakerRegistry) -> None:
    targets = _targets(registry, pay=_settings())
    decision = admit(targets["pay"], "/p.S/M", Scope(), targets.get)
    assert not isinstance(decision, Rejection)
    target, admission = decision
    assert target is targets["pay"]
    assert target.guard.bulkhead.in_flight == 1
    admission.settle(grpc.StatusCode.OK, 0.01)
    assert target.guard.bulkhead.in_flight == 0
    assert target.guard.breaker_for("/p.S/M").view().snapshot.calls == 1


def test_caller_errors_are_successes_and_failure_codes_are_failures(
        registry: BreakerRegistry) -> None:
    targets = _targets(registry, pay=_settings())
    for code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                 grpc.StatusCode.INTERNAL):
        _call(targets["pay"], targets, code)
    snapshot = targets["pay"].guard.breaker_for("/p.S/M").view().snapshot
    assert (snapshot.calls, snapshot.failures) == (2, 1)  # window of 2: NOT_FOUND, INTERNAL


def test_a_cancelled_call_counts_nothing(registry: BreakerRegistry) -> None:
    targets = _targets(registry, pay=_settings())
    _call(targets["pay"], targets, None)
    assert targets["pay"].guard.breaker_for("/p.S/M").view().snapshot.calls == 0
    assert targets["pay"].guard.bulkhead.in_flight == 0


def test_open_breaker_rejects_with_the_breaker_metadata(registry: BreakerRegistry,
                                                        clock: Clock) -> None:
    targets = _targets(registry, pay=_settings())
    _trip(targets["pay"], targets)
    clock.now += 0.25
    scope = Scope()
    decision = admit(targets["pay"], "/p.S/M", scope, targets.get)
    assert isinstance(decision, Rejection)
    assert decision.code == grpc.StatusCode.UNAVAILABLE
    assert dict(decision.trailing_metadata) == {
        "x-sidecar-breaker": "open", "x-sidecar-upstream": "pay",
        "x-sidecar-retry-after-ms": "750"}
    assert scope.events == ["rejected:open:750"]
    assert targets["pay"].guard.bulkhead.in_flight == 0


def test_status_fallback_answers_with_its_code_and_message(registry: BreakerRegistry) -> None:
    targets = _targets(registry, pay=_settings(
        fallback_status=grpc.StatusCode.FAILED_PRECONDITION, fallback_message="degraded"))
    _trip(targets["pay"], targets)
    scope = Scope()
    decision = admit(targets["pay"], "/p.S/M", scope, targets.get)
    assert isinstance(decision, Rejection)
    assert (decision.code, decision.details) == (grpc.StatusCode.FAILED_PRECONDITION, "degraded")
    assert dict(decision.trailing_metadata)["x-sidecar-fallback"] == "status"
    assert scope.events == ["rejected:open:1000", "fallback:status:FAILED_PRECONDITION"]


def test_upstream_fallback_takes_the_call_through_its_own_breaker(
        registry: BreakerRegistry) -> None:
    targets = _targets(registry, pay=_settings(fallback_upstream="backup"),
                       backup=_settings())
    _trip(targets["pay"], targets)
    scope = Scope()
    decision = admit(targets["pay"], "/p.S/M", scope, targets.get)
    assert not isinstance(decision, Rejection)
    target, admission = decision
    assert target is targets["backup"]
    assert admission.breaker.name == "backup"
    assert scope.events == ["rejected:open:1000", "fallback:upstream:backup"]
    admission.settle(grpc.StatusCode.OK, 0.01)
    assert targets["backup"].guard.breaker_for("/p.S/M").view().snapshot.calls == 1


def test_open_fallback_upstream_ends_with_the_first_rejection(registry: BreakerRegistry) -> None:
    targets = _targets(registry, pay=_settings(fallback_upstream="backup"),
                       backup=_settings(fallback_upstream="pay"))  # a cycle, both open
    _trip(targets["backup"], targets)
    _trip(targets["pay"], {})
    decision = admit(targets["pay"], "/p.S/M", Scope(), targets.get)
    assert isinstance(decision, Rejection)
    assert dict(decision.trailing_metadata)["x-sidecar-upstream"] == "pay"


def test_overflow_refuses_and_hands_the_probe_slot_back(registry: BreakerRegistry,
                                                        clock: Clock) -> None:
    targets = _targets(registry, pay=_settings(max_concurrent_requests=1))
    _trip(targets["pay"], targets)
    clock.now += 1.0  # open period over: the next call would be the one probe
    targets["pay"].guard.bulkhead.in_flight = 1  # a call from before the trip still runs
    scope = Scope()
    decision = admit(targets["pay"], "/p.S/M", scope, targets.get)
    assert isinstance(decision, Rejection)
    assert decision.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(decision.trailing_metadata) == {"x-sidecar-overflow": "true",
                                                "x-sidecar-upstream": "pay"}
    assert scope.events == ["overflow"]
    assert targets["pay"].guard.bulkhead.overflows == 1
    breaker = targets["pay"].guard.breaker_for("/p.S/M")
    assert breaker.view().half_open_in_flight == 0  # the probe slot is free again
    targets["pay"].guard.bulkhead.in_flight = 0
    assert admit(targets["pay"], "/p.S/M", Scope(), targets.get) is not None


def test_rejection_reasons_name_half_open_and_forced_open(registry: BreakerRegistry,
                                                          clock: Clock) -> None:
    targets = _targets(registry, pay=_settings())
    _trip(targets["pay"], targets)
    clock.now += 1.0
    assert not isinstance(admit(targets["pay"], "/p.S/M", Scope(), targets.get), Rejection)
    scope = Scope()
    decision = admit(targets["pay"], "/p.S/M", scope, targets.get)
    assert isinstance(decision, Rejection) and decision.reason == "half_open_full"
    targets["pay"].guard.breaker_for("/p.S/M").set_mode(Mode.FORCED_OPEN)
    decision = admit(targets["pay"], "/p.S/M", scope, targets.get)
    assert isinstance(decision, Rejection) and decision.reason == "forced_open"


def test_per_method_breakers_are_separate_and_bounded(registry: BreakerRegistry,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard_module, "MAX_METHOD_BREAKERS", 2)
    guard = UpstreamGuard("pay", _settings(per_method=True), registry)
    assert guard.breaker_for("/p.S/A").name == "pay/p.S/A"
    assert guard.breaker_for("/p.S/B").name == "pay/p.S/B"
    assert guard.breaker_for("/p.S/C").name == "pay/_other_"
    assert guard.breaker_for("/p.S/D") is guard.breaker_for("/p.S/C")
    assert registry.names() == ["pay/_other_", "pay/p.S/A", "pay/p.S/B"]


def test_reload_keeps_state_and_streak_but_applies_new_settings(
        registry: BreakerRegistry) -> None:
    targets = _targets(registry, pay=_settings())
    _trip(targets["pay"], targets)
    breaker = targets["pay"].guard.breaker_for("/p.S/M")
    targets["pay"].guard.reconfigure(_settings(breaker=replace(TRIPPY, failure_rate=0.9),
                                               max_concurrent_requests=3))
    assert targets["pay"].guard.breaker_for("/p.S/M") is breaker
    assert breaker.state is State.OPEN
    assert breaker.view().trip_streak == 1
    assert breaker.settings.failure_rate == 0.9
    assert targets["pay"].guard.bulkhead.limit == 3


def test_reload_keeps_an_operators_mode_unless_the_file_changes_it(
        registry: BreakerRegistry) -> None:
    breaker = registry.configure("pay", TRIPPY)
    breaker.set_mode(Mode.METRICS_ONLY, source="admin")
    registry.configure("pay", replace(TRIPPY, failure_rate=0.7))
    assert breaker.mode is Mode.METRICS_ONLY
    registry.configure("pay", replace(TRIPPY, failure_rate=0.7, mode=Mode.DISABLED))
    assert breaker.mode is Mode.DISABLED


def test_listeners_hear_breakers_created_before_and_after(registry: BreakerRegistry) -> None:
    heard: list[str] = []

    class Listener(BreakerListener):
        def on_transition(self, transition: Transition) -> None:
            heard.append(transition.breaker)

    early = UpstreamGuard("early", _settings(), registry)
    registry.add_listener(Listener())
    late = UpstreamGuard("late", _settings(), registry)
    for guard in (early, late):
        targets = {guard.name: Target(guard)}
        _trip(targets[guard.name], targets)
    assert heard == ["early", "late"]


def test_discarded_breakers_leave_the_registry(registry: BreakerRegistry) -> None:
    guard = UpstreamGuard("pay", _settings(), registry)
    registry.discard(guard.breaker_names())
    assert registry.get("pay") is None
    assert registry.names() == []


def test_unknown_status_code_name_is_refused() -> None:
    with pytest.raises(KeyError):
        status_codes(["UNAVAILABLE", "SOMETIMES"])
