"""Which calls of an upstream may be retried or hedged, and how (``retry`` / ``hedging``).

The defaults here are the only ones: :mod:`sidecar.config._resilience` reads them. Status codes
are kept as gRPC code *names* (``"UNAVAILABLE"``) so this module stays free of grpc.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from sidecar.resilience.backoff import Backoff
from sidecar.resilience.budget import DEFAULT_TTL_S, RetryBudget

__all__ = [
    "MAX_ATTEMPTS_LIMIT",
    "BackoffSettings",
    "BudgetSettings",
    "HedgingPolicy",
    "ResiliencePolicies",
    "RetryPolicy",
]

MAX_ATTEMPTS_LIMIT: Final = 5
"""Most attempts (the first one included) a retry or hedging policy may allow, as gRPC does."""


def _prefixed(method: str, prefixes: tuple[str, ...]) -> bool:
    return any(method.startswith(prefix) for prefix in prefixes)


@dataclass(frozen=True, slots=True)
class BackoffSettings:
    """``retry.backoff``: the first retry waits about ``base_s``, each next one ``multiplier``
    times longer, never more than ``max_s``; ``jitter`` spreads each delay by ± that fraction."""

    base_s: float = 0.025
    max_s: float = 0.250
    multiplier: float = 2.0
    jitter: float = 0.2

    def new_backoff(self, random: Callable[[], float] = _random.random) -> Backoff:
        return Backoff(self.base_s, self.max_s, self.multiplier, self.jitter, random=random)


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    """``retry.budget``: retries and hedges together stay under ``ratio`` of the calls of the
    last ``ttl_s`` plus ``min_per_s`` (see :class:`~sidecar.resilience.budget.RetryBudget`)."""

    ratio: float = 0.2
    min_per_s: float = 10.0
    ttl_s: float = DEFAULT_TTL_S

    def new_budget(self, clock: Callable[[], float]) -> RetryBudget:
        return RetryBudget(self.ratio, self.min_per_s, clock=clock, ttl_s=self.ttl_s)


class _ForListedMethods:
    """What a retry and a hedging policy share: on for a listed method, when it allows more than
    one attempt."""

    __slots__ = ()
    methods: tuple[str, ...]
    max_attempts: int

    @property
    def enabled(self) -> bool:
        return self.max_attempts > 1 and bool(self.methods)

    def applies_to(self, method: str) -> bool:
        return self.enabled and _prefixed(method, self.methods)


@dataclass(frozen=True, slots=True)
class RetryPolicy(_ForListedMethods):
    """``retry``: a failed attempt of a listed method is tried again (gRFC A6) while the call
    is not committed, its status is retryable, the budget and the caller's deadline allow it,
    and fewer than ``max_attempts`` attempts were made."""

    max_attempts: int = 1
    retryable_codes: frozenset[str] = frozenset({"UNAVAILABLE"})
    methods: tuple[str, ...] = ()
    """Method-path prefixes that are safe to retry; nothing else ever is."""
    per_try_timeout_s: float | None = None
    """Bound of one attempt (None: only the caller's deadline and the upstream's timeout)."""
    backoff: BackoffSettings = field(default_factory=BackoffSettings)
    buffer_bytes: int = 256 * 1024
    """Most request bytes kept for a replay; a call that sends more is no longer retried."""


@dataclass(frozen=True, slots=True)
class HedgingPolicy(_ForListedMethods):
    """``hedging``: a listed (idempotent) method gets another attempt on another endpoint after
    ``delay_s`` without a response, or at once after a ``non_fatal_codes`` status; the first
    response wins and the other attempts are cancelled."""

    methods: tuple[str, ...] = ()
    delay_s: float = 0.050
    max_attempts: int = 2
    non_fatal_codes: frozenset[str] = frozenset({"UNAVAILABLE"})


@dataclass(frozen=True, slots=True)
class ResiliencePolicies:
    """An upstream's retry and hedging policies and the budget they share."""

    retry: RetryPolicy | None = None
    hedging: HedgingPolicy | None = None
    budget: BudgetSettings = field(default_factory=BudgetSettings)

    @property
    def enabled(self) -> bool:
        return bool((self.retry and self.retry.enabled) or (self.hedging and self.hedging.enabled))

    def for_method(self, method: str) -> RetryPolicy | HedgingPolicy | None:
        """The policy of one method (None: a single attempt). The config refuses a method that
        is both retried and hedged; hedging wins here should one slip through."""
        if self.hedging is not None and self.hedging.applies_to(method):
            return self.hedging
        if self.retry is not None and self.retry.applies_to(method):
            return self.retry
        return None


NO_POLICIES: Final = ResiliencePolicies()
"""Neither retries nor hedging: every call is one attempt."""
