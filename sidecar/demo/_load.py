"""The demo's load generator: a host app calling its upstreams through the sidecar.

Each target gets calls at a steady rate (``calls_per_s``) without waiting for answers, with at
most ``max_in_flight`` outstanding calls per target (a tick is skipped when that many are
pending: the generator never queues without bound). Each answer is classified the way a host
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

_BREAKER_KEY: Final = "x-sidecar-breaker"
_OVERFLOW_KEY: Final = "x-sidecar-overflow"


@dataclass(frozen=True, slots=True)
class Target:
    """One upstream as the host app calls it."""

    upstream: str
    method: str
    calls_per_s: float


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
            if not target.calls_per_s > 0:
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

    async def _drive(self, target: Target, stop: asyncio.Event) -> None:
        interval_s = 1.0 / target.calls_per_s
        next_at = self._clock()
        counts = self._counts[target.upstream]
        while not stop.is_set():
            if counts.in_flight < self._max_in_flight:
                task = asyncio.create_task(self._call(target))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            next_at += interval_s
            delay = next_at - self._clock()
            if delay < -1.0:  # fell far behind (a stalled loop): do not burst to catch up
                next_at = self._clock()
                delay = 0.0
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, delay))
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
