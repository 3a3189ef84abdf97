"""A simulated saturating server for the limit algorithms, on a fake clock (no sleeping).

``capacity`` calls are served at once, each for ``service_s``; the rest wait in the server's
FIFO queue, so the latency a caller sees rises with the calls in flight beyond capacity (as
``tests/support/upstream.py``'s ``capacity`` switch does for real). Closed-loop callers call
again as soon as a call ends; a shed caller waits ``backoff_s`` first. ``phases`` says how many
callers are active until when.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

from sidecar.resilience.limits import AdaptiveLimiter
from tests.support.fake_clock import FakeClock


@dataclass
class Run:
    """What a simulation saw: (time, limit) every ``sample_every_s``, and admitted RTTs."""

    limits: list[tuple[float, int]] = field(default_factory=list)
    rtts: list[tuple[float, float]] = field(default_factory=list)
    shed: int = 0

    def limits_between(self, start_s: float, end_s: float) -> list[int]:
        return [limit for at, limit in self.limits if start_s <= at < end_s]

    def rtts_between(self, start_s: float, end_s: float) -> list[float]:
        return [rtt for at, rtt in self.rtts if start_s <= at < end_s]


def simulate(limiter: AdaptiveLimiter, clock: FakeClock, phases: list[tuple[float, int]], *,
             capacity: int = 8, service_s: float = 0.020, backoff_s: float = 0.010,
             sample_every_s: float = 0.25) -> Run:
    """Drive ``limiter`` through ``phases`` (``(until_s, callers)``, in order)."""
    start = clock.now
    events: list[tuple[float, int, str, int, float]] = []
    seq = 0

    def push(at: float, kind: str, caller: int, began: float = 0.0) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (at, seq, kind, caller, began))

    callers = max(n for _, n in phases)
    for caller in range(callers):
        push(0.0, "call", caller)
    busy = 0
    waiting: deque[tuple[int, float]] = deque()
    run = Run()
    next_sample = 0.0
    end = phases[-1][0]
    while events:
        at, _, kind, caller, began = heapq.heappop(events)
        if at >= end:
            break
        clock.now = start + at
        while at >= next_sample:
            run.limits.append((next_sample, limiter.limit))
            next_sample += sample_every_s
        active = next(n for until, n in phases if at < until)
        if kind == "call":
            if caller >= active:
                push(at + 0.05, "call", caller)  # this caller is idle in this phase
            elif not limiter.try_acquire():
                run.shed += 1
                push(at + backoff_s, "call", caller)
            elif busy < capacity:
                busy += 1
                push(at + service_s, "done", caller, at)
            else:
                waiting.append((caller, at))
        else:
            limiter.release(at - began, dropped=False)
            run.rtts.append((at, at - began))
            if waiting:
                next_caller, queued_at = waiting.popleft()
                push(at + service_s, "done", next_caller, queued_at)
            else:
                busy -= 1
            push(at, "call", caller)
        limiter.poll()
    return run
