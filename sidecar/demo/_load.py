"""The demo's load generator: a host app calling its upstreams through the sidecar.

Each target gets calls at its rate (``calls_per_s``, or ``rate_of(elapsed_s)`` for a rate that
follows a schedule, e.g. ``catalog``'s surge) without waiting for answers (an open loop, as
real traffic: a slow upstream gets no fewer calls), with at most ``max_in_flight``
outstanding calls per target (a call is skipped when that many are pending: the generator
never queues without bound). Each answer is classified the way a host
app would see it:

- ``ok``: the upstream answered;
- ``rejected``: the sidecar's breaker answered at once (trailing ``x-sidecar-breaker: open``);
- ``overflow``: the sidecar's concurrency limit refused the call (``x-sidecar-overflow``);
- ``failed``: the upstream (or the deadline) failed the call.

Runs on the caller's asyncio loop; ``snapshot()`` is cheap and safe to call from that loop.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

import grpc

OUTCOMES: Final = ("ok", "failed", "rejected", "overflow")
RATE_WINDOW_S: Final = 2.0
"""Rates shown in the live view are averaged over this many seconds."""
DEFAULT_CALL_TIMEOUT_S: Final = 2.0
DEFAULT_MAX_IN_FLIGHT: Final = 200

MIN_TICK_S: Final = 0.005
"""At high rates the generator wakes this often and sends the calls due (a timer per call at
hundreds a second would cost more CPU than the calls)."""
MAX_TICK_S: Final = 0.1
"""At low rates it still wakes this often, so a rate that changes is followed quickly."""
MAX_BURST_S: Final = 0.2
"""Calls due after a stalled loop are sent up to this many seconds' worth, not all at once."""

_BREAKER_KEY: Final = "x-sidecar-breaker"
_OVERFLOW_KEY: Final = "x-sidecar-overflow"


@dataclass(frozen=True, slots=True)
class Target:
    """One upstream as the host app calls it."""

    upstream: str
    method: str
    calls_per_s: float
    """The rate, or the first one when ``rate_of`` is given."""
    rate_of: Callable[[float], float] | None = None
    """Calls per second ``elapsed_s`` after the load started (None: always ``calls_per_s``)."""

    def rate_at(self, elapsed_s: float) -> float:
        return self.calls_per_s if self.rate_of is None else max(0.0, self.rate_of(elapsed_s))


@dataclass(frozen=True, slots=True)
class TargetStats:
    totals: Mapping[str, int]
    rates_per_s: Mapping[str, float]


@dataclass
class _Counts:
    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    recent: deque[tuple[float, str]] = field(default_factory=deque)
    in_flight: int = 0


def classify(code: grpc.StatusCode, trailing: Mapping[str, str]) -> str:
    """The outcome a host app sees for a call that ended with ``code``."""
    if code == grpc.StatusCode.OK:
        return "ok"
    if trailing.get(_BREAKER_KEY) == "open":
        return "rejected"
    if trailing.get(_OVERFLOW_KEY) == "true":
        return "overflow"
    return "failed"


class LoadGenerator:
    """Calls ``targets`` through ``channel`` until ``stop`` is set.

    Example::

        load = LoadGenerator(channel, [Target("payments", "/demo.shop.Payments/Charge", 25)])
        await load.run(stop_event)
    """

    def __init__(self, channel: grpc.aio.Channel, targets: list[Target], *,
                 call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        for target in targets:
            if not target.calls_per_s > 0:  # also refuses nan
                raise ValueError(f"{target.upstream}: calls_per_s must be > 0")
        self._channel = channel
        self._targets = targets
        self._timeout_s = call_timeout_s
        self._max_in_flight = max_in_flight
        self._clock = clock
        self._counts = {t.upstream: _Counts() for t in targets}
        self._tasks: set[asyncio.Task[None]] = set()

    def record(self, upstream: str, outcome: str) -> None:
        counts = self._counts[upstream]
        counts.totals[outcome] += 1
        counts.recent.append((self._clock(), outcome))

    def snapshot(self) -> dict[str, TargetStats]:
        """Totals and recent per-second rates, per upstream."""
        now = self._clock()
        result = {}
        for upstream, counts in self._counts.items():
            while counts.recent and counts.recent[0][0] < now - RATE_WINDOW_S:
                counts.recent.popleft()
            rates = dict.fromkeys(OUTCOMES, 0.0)
            for _, outcome in counts.recent:
                rates[outcome] += 1.0 / RATE_WINDOW_S
            result[upstream] = TargetStats(dict(counts.totals), rates)
        return result

    async def _call(self, target: Target) -> None:
        counts = self._counts[target.upstream]
        counts.in_flight += 1
        try:
            call = self._channel.unary_unary(target.method)
            await call(b"order-42", timeout=self._timeout_s)
            self.record(target.upstream, "ok")
        except grpc.aio.AioRpcError as exc:
            trailing = {str(k): str(v) for k, v in (exc.trailing_metadata() or ())}
            self.record(target.upstream, classify(exc.code(), trailing))
        finally:
            counts.in_flight -= 1

    def _launch(self, target: Target) -> None:
        if self._counts[target.upstream].in_flight < self._max_in_flight:
            task = asyncio.create_task(self._call(target))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _drive(self, target: Target, stop: asyncio.Event) -> None:
        started = last = self._clock()
        credit = 1.0  # the first call goes at once
        while not stop.is_set():
            now = self._clock()
            rate = target.rate_at(now - started)
            credit = min(credit + rate * (now - last), max(1.0, rate * MAX_BURST_S))
            last = now
            while credit >= 1.0:
                credit -= 1.0
                self._launch(target)
            wait_s = (1.0 - credit) / rate if rate > 0 else MAX_TICK_S
            try:
                await asyncio.wait_for(stop.wait(), min(max(wait_s, MIN_TICK_S), MAX_TICK_S))
            except TimeoutError:
                pass

    async def run(self, stop: asyncio.Event) -> None:
        """Drive every target until ``stop``; then cancel the calls still pending."""
        try:
            await asyncio.gather(*(self._drive(t, stop) for t in self._targets))
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
