"""Admitting one call: which upstream takes it, and how its outcome is handed back.

:func:`admit` walks the breaker, the adaptive limit and the fixed ceiling of the upstream (and
of its fallback upstreams), in the order and with the classification rules described in
:mod:`sidecar.protection.guard`; :class:`Admission` is the ticket a let-through call settles
exactly once. Both transports (the proxy and the in-process interceptors) call these, so a
call is judged the same way whichever way it is made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

import grpc

from sidecar.breaker import CircuitBreaker, Permit
from sidecar.protection._shedding import settle_limiter
from sidecar.protection.guard import Rejection, UpstreamGuard
from sidecar.protection.hooks import CallScope
from sidecar.resilience.limits import AdaptiveLimiter

__all__ = ["Admission", "Guarded", "admit"]


class Guarded(Protocol):
    """Anything protected by an :class:`UpstreamGuard` (the proxy's upstreams, the
    interceptors' guards)."""

    @property
    def guard(self) -> UpstreamGuard: ...


G = TypeVar("G", bound=Guarded)


class Admission:
    """A call that was let through: hand it back with :meth:`settle` exactly once."""

    __slots__ = ("breaker", "guard", "limiter", "permit")

    def __init__(self, guard: UpstreamGuard, breaker: CircuitBreaker, permit: Permit,
                 limiter: AdaptiveLimiter | None = None) -> None:
        self.guard = guard
        self.breaker = breaker
        self.permit = permit
        self.limiter = limiter
        """The adaptive limiter that admitted the call (kept: a reload may replace the
        guard's), or None."""

    def settle(self, code: grpc.StatusCode | None, duration_s: float) -> None:
        """Count the call's outcome (``code`` None: the caller cancelled, count nothing) and
        free its concurrency slots; the adaptive limiter learns ``duration_s`` as the call's
        RTT. ``duration_s`` as defined in the module docstring."""
        self.guard.bulkhead.leave()
        if self.limiter is not None:
            settle_limiter(self.limiter, code, duration_s, self.guard.failure_codes)
        if code is None:
            self.breaker.release(self.permit)
        else:
            self.breaker.record(self.permit, duration_s, code in self.guard.failure_codes)


def admit(
    first: G, method: str, scope: CallScope, lookup: Callable[[str], G | None]
) -> tuple[G, Admission] | Rejection:
    """Decide one call: the upstream (``first``, or a fallback upstream found by ``lookup``)
    that takes it and its :class:`Admission`, or the :class:`Rejection` to answer with.

    Reports ``rejected`` (first upstream's breaker only), ``fallback``, ``shed`` and
    ``overflow`` to ``scope``. Fallback upstreams are followed in a chain, each through its own
    breaker and limits, never twice the same (a cycle in the config ends as the first rejection).
    """
    target = first
    first_rejection: Rejection | None = None
    visited: list[G] | None = None
    while True:
        guard = target.guard
        breaker = guard.breaker_for(method)
        permit = breaker.try_acquire()
        if permit is not None:
            limiter = guard.limiter
            if limiter is not None and not limiter.try_acquire():
                breaker.release(permit)  # shed: never counted against the breaker
                scope.shed(limiter.limit, limiter.in_flight)
                return guard.shed_rejection(limiter)
            if guard.bulkhead.try_enter():
                return target, Admission(guard, breaker, permit, limiter)
            if limiter is not None:
                limiter.release_ignored()
            breaker.release(permit)
            scope.overflow()
            return guard.overflow_rejection()
        rejection = guard.breaker_rejection(breaker)
        if first_rejection is None:
            first_rejection = rejection
            scope.rejected(rejection.reason, rejection.retry_after_ms)
        answer = guard.status_fallback(rejection)
        if answer is not None:
            scope.fallback("status", answer.code.name)
            return answer
        fallback_name = guard.settings.fallback_upstream
        fallback = lookup(fallback_name) if fallback_name is not None else None
        if visited is None:
            visited = [target]
        if fallback is None or fallback in visited:
            return first_rejection
        visited.append(fallback)
        scope.fallback("upstream", fallback_name or "")
        target = fallback
