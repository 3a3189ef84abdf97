"""The protection of one upstream, shared by the proxy and the in-process interceptors.

This module (with :mod:`sidecar.protection.admission`, which admits and settles calls, and
:mod:`sidecar.protection.registry`, which owns the breakers) decides, for both the proxy
(``sidecar proxy``) and library mode (:mod:`sidecar.interceptor`), which breaker guards a call,
whether the call is admitted, and how its outcome is counted. Neither caller duplicates any of it.

How calls are classified (one rule for every call shape)
--------------------------------------------------------
- **Failure** is decided by the *final status* only: a code in the upstream's ``failure_codes``
  (default UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, RESOURCE_EXHAUSTED) is a failure;
  everything else, OK and caller errors such as INVALID_ARGUMENT or NOT_FOUND, is a success.
  A stream that delivered messages and then ended UNAVAILABLE is a failure.
- **Duration** (judged against ``slow_call_ms``) runs from the start of the upstream call to the
  *first response message*, or to the end of the call when no message came. For unary responses
  that is the whole call. For server and bidi streams it is the time to first message, so a
  healthy long-lived stream is never "slow", while an upstream that is slow to answer is.
- The outcome is recorded when the call ends (its final status is known only then). A HALF_OPEN
  probe that is a long-lived stream holds its probe slot until it ends, or until the breaker's
  ``probe_timeout_ms`` reclaims it.
- A call the caller cancelled records nothing (:meth:`CircuitBreaker.release`): the upstream did
  nothing wrong. A call that ran past the caller's deadline counts as DEADLINE_EXCEEDED.

Admission order: the breaker first (an OPEN breaker answers at once, with a fallback if one is
configured), then the adaptive concurrency limit (``adaptive_concurrency``, an
:class:`~sidecar.resilience.limits.AdaptiveLimiter`: a call over it is shed), then the fixed
ceiling (:class:`Bulkhead`, ``max_concurrent_requests``). A call shed or over the ceiling gets
RESOURCE_EXHAUSTED with ``x-sidecar-overflow: true`` at once and gives its breaker permit back
unused (never counted against the breaker).

Threading: everything here is non-blocking and O(1) per call. :class:`BreakerRegistry` and
:class:`Bulkhead` take a short ``threading.Lock``, so the sync interceptors may call from any
thread; the proxy calls from its event loop.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import grpc

from sidecar.breaker import BreakerSettings, CircuitBreaker, Mode, State
from sidecar.protection._shedding import reconfigured_limiter
from sidecar.protection.registry import BreakerRegistry
from sidecar.resilience import SheddingListener
from sidecar.resilience.limits import AdaptiveLimiter, LimitSettings

if TYPE_CHECKING:
    from sidecar.config import UpstreamConfig

__all__ = [
    "MAX_METHOD_BREAKERS",
    "MD_BREAKER",
    "MD_FALLBACK",
    "MD_OVERFLOW",
    "MD_RETRY_AFTER_MS",
    "MD_UPSTREAM",
    "OTHER_METHODS_BREAKER_SUFFIX",
    "Bulkhead",
    "GuardSettings",
    "Rejection",
    "UpstreamGuard",
    "status_codes",
]

# Trailing metadata keys on answers the sidecar makes itself (a contract: docs/breaker.md).
MD_BREAKER: Final = "x-sidecar-breaker"
MD_UPSTREAM: Final = "x-sidecar-upstream"
MD_RETRY_AFTER_MS: Final = "x-sidecar-retry-after-ms"
MD_OVERFLOW: Final = "x-sidecar-overflow"
MD_FALLBACK: Final = "x-sidecar-fallback"

MAX_METHOD_BREAKERS: Final = 256
"""With ``per_method``, breakers one upstream may create; further methods share one breaker
named ``{upstream}/_other_`` (method paths come from callers: the count must stay bounded)."""
OTHER_METHODS_BREAKER_SUFFIX: Final = "/_other_"


def status_codes(names: Iterable[str]) -> frozenset[grpc.StatusCode]:
    """gRPC status codes from their names (``"UNAVAILABLE"``); KeyError names an unknown one."""
    return frozenset(grpc.StatusCode[name.upper()] for name in names)


@dataclass(frozen=True, slots=True)
class Rejection:
    """An answer the sidecar gives itself instead of the upstream's.

    ``reason``: ``open``, ``half_open_full``, ``forced_open`` (breaker), ``overflow`` (the
    ``max_concurrent_requests`` ceiling), ``shed`` (the adaptive limit), or ``fallback`` (a
    fixed-status fallback answered for an open breaker).
    """

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str], ...]
    reason: str
    retry_after_ms: int


class Bulkhead:
    """A non-blocking concurrency limit: at most ``limit`` calls in flight, the rest refused
    at once. Nothing ever queues. ``overflows`` counts refusals since start."""

    __slots__ = ("_lock", "in_flight", "limit", "overflows")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self.in_flight = 0
        self.overflows = 0
        self._lock = threading.Lock()

    def try_enter(self) -> bool:
        with self._lock:
            if self.in_flight >= self.limit:
                self.overflows += 1
                return False
            self.in_flight += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """What an :class:`UpstreamGuard` needs from an upstream's config."""

    breaker: BreakerSettings
    failure_codes: frozenset[grpc.StatusCode]
    per_method: bool
    max_concurrent_requests: int
    fallback_status: grpc.StatusCode | None = None
    fallback_message: str = ""
    fallback_upstream: str | None = None
    adaptive: LimitSettings | None = None
    """``adaptive_concurrency``; None: only the fixed ceiling."""

    @classmethod
    def from_config(cls, upstream: UpstreamConfig) -> GuardSettings:
        fallback = upstream.fallback
        return cls(
            breaker=upstream.breaker.to_settings(),
            failure_codes=status_codes(upstream.breaker.failure_codes),
            per_method=upstream.per_method,
            max_concurrent_requests=upstream.max_concurrent_requests,
            fallback_status=(
                grpc.StatusCode[fallback.status]
                if fallback is not None and fallback.status is not None else None
            ),
            fallback_message=fallback.message if fallback is not None else "",
            fallback_upstream=fallback.upstream if fallback is not None else None,
            adaptive=(upstream.adaptive_concurrency.to_settings()
                      if upstream.adaptive_concurrency is not None else None),
        )


class UpstreamGuard:
    """The protection of one upstream: its breaker(s), failure codes and concurrency limit.

    Long-lived: a reload that keeps the upstream calls :meth:`reconfigure`, so breaker state,
    the in-flight count and the overflow count carry over.
    """

    __slots__ = ("_clock", "_method_breakers", "_registry", "_shedding_listeners", "breaker",
                 "bulkhead", "failure_codes", "limiter", "name", "settings")

    def __init__(self, name: str, settings: GuardSettings, registry: BreakerRegistry, *,
                 shedding_listeners: Sequence[SheddingListener] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``shedding_listeners`` (kept by reference) hear the adaptive limiter's periods."""
        self.name = name
        self._shedding_listeners = shedding_listeners
        self._clock = clock
        self.limiter: AdaptiveLimiter | None = self._limiter(None, settings)
        """The adaptive concurrency limit; None without ``adaptive_concurrency``."""
        self._registry = registry
        self._method_breakers: dict[str, CircuitBreaker] = {}
        self.settings = settings
        self.failure_codes = settings.failure_codes
        self.bulkhead = Bulkhead(settings.max_concurrent_requests)
        self.breaker: CircuitBreaker | None = (
            None if settings.per_method else registry.configure(name, settings.breaker)
        )
        """The upstream's one breaker; None with ``per_method`` (one breaker per method)."""

    def reconfigure(self, settings: GuardSettings) -> None:
        """Apply reloaded settings, keeping breaker state. ``per_method`` must not change
        (a change of breaker layout means a new guard)."""
        if settings.per_method != self.settings.per_method:
            raise ValueError("per_method changed: build a new UpstreamGuard")
        self.settings = settings
        self.failure_codes = settings.failure_codes
        self.bulkhead.limit = settings.max_concurrent_requests
        self.limiter = self._limiter(self.limiter, settings)
        for name in self.breaker_names():
            self._registry.configure(name, settings.breaker)

    def _limiter(self, current: AdaptiveLimiter | None,
                 settings: GuardSettings) -> AdaptiveLimiter | None:
        return reconfigured_limiter(current, settings.adaptive, upstream=self.name,
                                    ceiling=settings.max_concurrent_requests,
                                    listeners=self._shedding_listeners, clock=self._clock)

    def breaker_names(self) -> list[str]:
        """Names of the breakers this guard has created so far."""
        if self.breaker is not None:
            return [self.breaker.name]
        return sorted({b.name for b in self._method_breakers.values()})

    def breaker_for(self, method: str) -> CircuitBreaker:
        """The breaker guarding ``method`` on this upstream (O(1) after the first call)."""
        breaker = self.breaker
        if breaker is not None:
            return breaker
        breaker = self._method_breakers.get(method)
        if breaker is None:
            breaker = self._new_method_breaker(method)
        return breaker

    def _new_method_breaker(self, method: str) -> CircuitBreaker:
        if len(self._method_breakers) >= MAX_METHOD_BREAKERS:
            other = self._method_breakers.get("*")
            if other is None:  # stored under a key no method path can have
                other = self._registry.configure(
                    self.name + OTHER_METHODS_BREAKER_SUFFIX, self.settings.breaker
                )
                self._method_breakers["*"] = other
            return other
        breaker = self._registry.configure(
            self.name + "/" + method.lstrip("/"), self.settings.breaker
        )
        self._method_breakers[method] = breaker
        return breaker

    def is_failure(self, code: grpc.StatusCode) -> bool:
        return code in self.failure_codes

    def breaker_rejection(self, breaker: CircuitBreaker) -> Rejection:
        """The answer for a call ``breaker`` refused: UNAVAILABLE with the breaker metadata."""
        retry_after_ms = math.ceil(breaker.retry_after_s() * 1000.0)
        if breaker.mode is Mode.FORCED_OPEN:
            reason = "forced_open"
            details = f"circuit breaker {breaker.name!r} is forced open by an operator"
        elif breaker.state is State.HALF_OPEN:
            reason = "half_open_full"
            details = (f"circuit breaker {breaker.name!r} is half-open and all "
                       f"{breaker.settings.half_open_probes} probe slots are busy")
        else:
            reason = "open"
            details = (f"circuit breaker {breaker.name!r} is open; "
                       f"retry after {retry_after_ms} ms")
        return Rejection(
            code=grpc.StatusCode.UNAVAILABLE,
            details=details,
            trailing_metadata=(
                (MD_BREAKER, "open"),
                (MD_UPSTREAM, self.name),
                (MD_RETRY_AFTER_MS, str(retry_after_ms)),
            ),
            reason=reason,
            retry_after_ms=retry_after_ms,
        )

    def status_fallback(self, rejection: Rejection) -> Rejection | None:
        """The fixed-status fallback answering for ``rejection``, if one is configured."""
        code = self.settings.fallback_status
        if code is None:
            return None
        return Rejection(
            code=code,
            details=self.settings.fallback_message,
            trailing_metadata=(*rejection.trailing_metadata, (MD_FALLBACK, "status")),
            reason="fallback",
            retry_after_ms=rejection.retry_after_ms,
        )

    def overflow_rejection(self) -> Rejection:
        """The answer for a call over ``max_concurrent_requests``."""
        return self._refused(f"upstream {self.name!r} has {self.bulkhead.limit} calls in flight "
                             f"(max_concurrent_requests); call refused", "overflow")

    def shed_rejection(self, limiter: AdaptiveLimiter) -> Rejection:
        """The answer for a call the adaptive limit shed."""
        return self._refused(f"upstream {self.name!r} is at its adaptive concurrency limit "
                             f"({limiter.limit}, {limiter.algorithm}); call shed", "shed")

    def _refused(self, details: str, reason: str) -> Rejection:
        """RESOURCE_EXHAUSTED at once with ``x-sidecar-overflow: true``: a concurrency limit
        (fixed or adaptive) refused the call before it reached the upstream."""
        return Rejection(
            code=grpc.StatusCode.RESOURCE_EXHAUSTED, details=details,
            trailing_metadata=((MD_OVERFLOW, "true"), (MD_UPSTREAM, self.name)),
            reason=reason, retry_after_ms=0,
        )
