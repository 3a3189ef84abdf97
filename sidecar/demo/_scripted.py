"""``sidecar demo --scripted``: the breaker alone, on a simulated clock.

This bounded demo drives one real :class:`~sidecar.breaker.CircuitBreaker` with a scripted
upstream that goes through phases (healthy, brownout, outage, recovery) on a simulated clock,
and prints every state transition with its reason, window rates, open duration and trip
streak. It needs no network and finishes in about a second.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sidecar.breaker import BreakerListener, BreakerSettings, CircuitBreaker, Transition

# Simulated traffic: one call every CALL_INTERVAL_S of virtual time.
CALL_INTERVAL_S = 0.05


@dataclass(frozen=True, slots=True)
class Phase:
    """A stretch of virtual time during which the upstream behaves one way."""

    name: str
    seconds: float
    failure_ratio: float
    latency_ms: float


PHASES: tuple[Phase, ...] = (
    Phase("healthy", 5.0, 0.01, 20.0),
    Phase("brownout", 5.0, 0.30, 200.0),
    Phase("outage", 15.0, 1.0, 5.0),
    Phase("recovery", 60.0, 0.0, 20.0),
)


class _VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Printer(BreakerListener):
    def __init__(self, clock: _VirtualClock, phase_of: list[str]) -> None:
        self.clock = clock
        self.phase_of = phase_of
        self.transitions: list[Transition] = []

    def on_transition(self, transition: Transition) -> None:
        self.transitions.append(transition)
        snap = transition.snapshot
        extra = (
            f" open for {transition.open_duration_s:.2f}s (trip streak {transition.trip_streak})"
            if transition.open_duration_s
            else ""
        )
        print(
            f"t={self.clock.now:6.2f}s [{self.phase_of[0]:>8}] "
            f"{transition.from_state.value:>9} -> {transition.to_state.value:<9} "
            f"reason={transition.reason:<20} calls={snap.calls:<3} "
            f"failure_rate={snap.failure_rate:.2f} slow_rate={snap.slow_call_rate:.2f}{extra}"
        )


def run_scripted_demo(seed: int = 7, speed_note: bool = True) -> list[Transition]:
    """Run the scripted outage; return the transitions (tests assert on them)."""
    clock = _VirtualClock()
    phase_name = [PHASES[0].name]
    settings = BreakerSettings(
        window_size=20, minimum_calls=10, failure_rate=0.5, slow_call_ms=150.0,
        slow_call_rate=0.8, consecutive_failures=5, half_open_probes=3,
        open_base_ms=1000.0, open_multiplier=2.0, open_max_ms=8000.0, open_jitter=0.1,
    )
    breaker = CircuitBreaker(
        "payments", settings, clock=clock, wall_clock=clock, rng=random.Random(seed)
    )
    printer = _Printer(clock, phase_name)
    breaker.add_listener(printer)
    rng = random.Random(seed)
    rejected = admitted = 0
    if speed_note:
        print("Scripted upstream 'payments': healthy -> brownout -> outage -> recovery "
              f"({sum(p.seconds for p in PHASES):.0f}s of virtual time, one call per "
              f"{CALL_INTERVAL_S * 1000:.0f} ms)\n")
    for phase in PHASES:
        phase_name[0] = phase.name
        end = clock.now + phase.seconds
        while clock.now < end:
            permit = breaker.try_acquire()
            if permit is None:
                rejected += 1
            else:
                admitted += 1
                failed = rng.random() < phase.failure_ratio
                breaker.record(permit, phase.latency_ms / 1000.0, failed)
            clock.now += CALL_INTERVAL_S
    view = breaker.view()
    print(f"\nfinal state: {view.state.value}, trip streak {view.trip_streak}; "
          f"{admitted} calls reached the upstream, {rejected} were rejected fast while open; "
          f"{len(printer.transitions)} transitions.")
    return printer.transitions
