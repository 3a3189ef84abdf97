"""sidecar.resilience: retries under a budget, hedging, and the adaptive concurrency limit.

Pure logic (stdlib only, no I/O, clocks and randomness injected; docs/endpoints.md). The
proxy's data path (:mod:`sidecar.proxy._forward`) and the guard (:mod:`sidecar.protection.guard`)
call it; telemetry and events hear about it through :class:`SheddingListener` and the call scope.

- :mod:`~sidecar.resilience.budget`: the retry budget shared by retries and hedges;
- :mod:`~sidecar.resilience.backoff`: delays between retries;
- :mod:`~sidecar.resilience.pushback`: the server's ``grpc-retry-pushback-ms``;
- :mod:`~sidecar.resilience.policy`: which methods are retried or hedged, and how;
- :mod:`~sidecar.resilience.limits`: the adaptive concurrency limit (Gradient2, Vegas).
"""

from sidecar.resilience._types import SheddingChange, SheddingListener, SheddingPhase
from sidecar.resilience.backoff import Backoff
from sidecar.resilience.budget import RetryBudget
from sidecar.resilience.policy import (
    NO_POLICIES,
    BackoffSettings,
    BudgetSettings,
    HedgingPolicy,
    ResiliencePolicies,
    RetryPolicy,
)
from sidecar.resilience.pushback import PUSHBACK_KEY, STOP, parse_pushback

__all__ = [
    "NO_POLICIES",
    "PUSHBACK_KEY",
    "STOP",
    "Backoff",
    "BackoffSettings",
    "BudgetSettings",
    "HedgingPolicy",
    "ResiliencePolicies",
    "RetryBudget",
    "RetryPolicy",
    "SheddingChange",
    "SheddingListener",
    "SheddingPhase",
    "parse_pushback",
]
