"""An upstream's retry/hedging policies and the budget they share, across reloads."""

from __future__ import annotations

from sidecar.breaker import BreakerSettings
from sidecar.protection import BreakerRegistry, GuardSettings, UpstreamGuard, status_codes
from sidecar.proxy.upstream import Upstream, upstream_channel_options
from sidecar.resilience import (
    NO_POLICIES,
    BudgetSettings,
    HedgingPolicy,
    ResiliencePolicies,
    RetryPolicy,
)

RETRY = RetryPolicy(max_attempts=3, methods=("/svc.A/",))
HEDGING = HedgingPolicy(methods=("/svc.B/",))


def _upstream() -> Upstream:
    settings = GuardSettings(breaker=BreakerSettings(), failure_codes=status_codes(["UNAVAILABLE"]),
                             per_method=False, max_concurrent_requests=10)
    guard = UpstreamGuard("svc", settings, BreakerRegistry())
    return Upstream("svc", 1.0, guard, lambda: None, clock=lambda: 100.0)


def test_each_method_gets_its_own_policy_or_none() -> None:
    upstream = _upstream()
    upstream.set_policies(ResiliencePolicies(RETRY, HEDGING))
    assert upstream.policy_for("/svc.A/Get") is RETRY
    assert upstream.policy_for("/svc.B/Search") is HEDGING
    assert upstream.policy_for("/svc.C/Put") is None


def test_without_policies_there_is_no_budget_and_no_policy() -> None:
    upstream = _upstream()
    upstream.set_policies(NO_POLICIES)
    assert upstream.budget is None
    assert upstream.policy_for("/svc.A/Get") is None


def test_a_reload_with_the_same_budget_settings_keeps_the_budget() -> None:
    upstream = _upstream()
    upstream.set_policies(ResiliencePolicies(RETRY))
    budget = upstream.budget
    assert budget is not None
    budget.deposit()
    upstream.set_policies(ResiliencePolicies(RETRY, HEDGING))
    assert upstream.budget is budget
    upstream.set_policies(ResiliencePolicies(RETRY, budget=BudgetSettings(ratio=0.5)))
    assert upstream.budget is not budget
    assert upstream.budget is not None and upstream.budget.ratio == 0.5


def test_an_upstream_with_policies_turns_grpc_retries_off() -> None:
    assert ("grpc.enable_retries", 0) in upstream_channel_options(None, 500, own_retries=True)
    assert ("grpc.enable_retries", 0) not in upstream_channel_options(None, 500)
