"""An upstream's retry and hedging keys (``upstreams.NAME.retry`` / ``hedging``).

Defaults live in :mod:`sidecar.resilience.policy`; these models only name and check the keys
and turn them into :class:`~sidecar.resilience.ResiliencePolicies`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from sidecar.config._fields import PositiveFloat, Ratio, Route, StatusCodeName, _Model
from sidecar.resilience.policy import (
    MAX_ATTEMPTS_LIMIT,
    BackoffSettings,
    BudgetSettings,
    HedgingPolicy,
    ResiliencePolicies,
    RetryPolicy,
)

_BACKOFF = BackoffSettings()
_BUDGET = BudgetSettings()
_RETRY = RetryPolicy()
_HEDGING = HedgingPolicy()

Attempts = Annotated[int, Field(ge=1, le=MAX_ATTEMPTS_LIMIT)]
Methods = Annotated[tuple[Route, ...], Field(min_length=1)]


class BackoffConfig(_Model):
    """``retry.backoff``: delays between retries."""

    base_ms: PositiveFloat = _BACKOFF.base_s * 1000
    max_ms: PositiveFloat = _BACKOFF.max_s * 1000
    multiplier: Annotated[float, Field(ge=1.0)] = _BACKOFF.multiplier
    jitter: Ratio = _BACKOFF.jitter

    @model_validator(mode="after")
    def _max_not_below_base(self) -> BackoffConfig:
        if self.max_ms < self.base_ms:
            raise ValueError(f"max_ms ({self.max_ms:g}) must be >= base_ms ({self.base_ms:g})")
        return self

    def settings(self) -> BackoffSettings:
        return BackoffSettings(self.base_ms / 1000, self.max_ms / 1000, self.multiplier,
                               self.jitter)


class BudgetConfig(_Model):
    """``retry.budget``: retries and hedges stay under ``ratio`` of the calls of the last
    ``ttl_ms`` plus ``min_per_s`` a second."""

    ratio: Ratio = _BUDGET.ratio
    min_per_s: Annotated[float, Field(ge=0.0)] = _BUDGET.min_per_s
    ttl_ms: Annotated[float, Field(ge=100.0)] = _BUDGET.ttl_s * 1000

    def settings(self) -> BudgetSettings:
        return BudgetSettings(self.ratio, self.min_per_s, self.ttl_ms / 1000)


class RetryConfig(_Model):
    """``retry``: which failed calls are tried again (see :class:`RetryPolicy`)."""

    max_attempts: Attempts = _RETRY.max_attempts
    retryable_codes: Annotated[tuple[StatusCodeName, ...], Field(min_length=1)] = tuple(
        sorted(_RETRY.retryable_codes))
    methods: Methods
    per_try_timeout_ms: PositiveFloat | None = None
    backoff: BackoffConfig = BackoffConfig()
    budget: BudgetConfig = BudgetConfig()
    buffer_bytes: Annotated[int, Field(ge=0)] = _RETRY.buffer_bytes

    def policy(self) -> RetryPolicy:
        per_try = None if self.per_try_timeout_ms is None else self.per_try_timeout_ms / 1000
        return RetryPolicy(
            max_attempts=self.max_attempts, retryable_codes=frozenset(self.retryable_codes),
            methods=self.methods, per_try_timeout_s=per_try, backoff=self.backoff.settings(),
            buffer_bytes=self.buffer_bytes,
        )


class HedgingConfig(_Model):
    """``hedging``: idempotent methods get a second attempt elsewhere after ``delay_ms``."""

    methods: Methods
    delay_ms: PositiveFloat = _HEDGING.delay_s * 1000
    max_attempts: Annotated[int, Field(ge=2, le=MAX_ATTEMPTS_LIMIT)] = _HEDGING.max_attempts
    non_fatal_codes: tuple[StatusCodeName, ...] = tuple(sorted(_HEDGING.non_fatal_codes))

    def policy(self) -> HedgingPolicy:
        return HedgingPolicy(methods=self.methods, delay_s=self.delay_ms / 1000,
                             max_attempts=self.max_attempts,
                             non_fatal_codes=frozenset(self.non_fatal_codes))


def check_retried_or_hedged(retry: RetryConfig | None, hedging: HedgingConfig | None) -> None:
    """A method cannot be both retried and hedged (gRFC A6): refuse any retry prefix that
    overlaps a hedging prefix (one is a prefix of the other), naming both."""
    if retry is None or hedging is None:
        return
    for retried in retry.methods:
        for hedged in hedging.methods:
            if retried.startswith(hedged) or hedged.startswith(retried):
                raise ValueError(
                    f"retry.methods {retried!r} and hedging.methods {hedged!r} overlap: a "
                    "method is either retried or hedged, not both"
                )


def resilience_policies(retry: RetryConfig | None,
                        hedging: HedgingConfig | None) -> ResiliencePolicies:
    """The policies of one upstream; the budget is ``retry.budget`` (defaults without retry)."""
    budget = retry.budget.settings() if retry is not None else BudgetSettings()
    return ResiliencePolicies(
        retry=retry.policy() if retry is not None else None,
        hedging=hedging.policy() if hedging is not None else None,
        budget=budget,
    )


__all__ = [
    "BackoffConfig",
    "BudgetConfig",
    "HedgingConfig",
    "RetryConfig",
    "check_retried_or_hedged",
    "resilience_policies",
]
