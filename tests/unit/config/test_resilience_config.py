"""``retry`` and ``hedging`` keys: defaults from sidecar.resilience, policies per method, and
errors that name the key."""

from __future__ import annotations

import pytest

from sidecar.config import ConfigError, parse_config
from sidecar.resilience import HedgingPolicy, RetryPolicy
from sidecar.resilience.policy import BackoffSettings, BudgetSettings

BASE = """
service: checkout
upstreams:
  orders:
    endpoints: [127.0.0.1:50051, 127.0.0.1:50052]
    routes: ["/orders.v1.Orders/"]
"""


def _upstream(extra: str):  # type: ignore[no-untyped-def]
    return parse_config(BASE + extra).upstreams["orders"]


def test_no_retry_and_no_hedging_by_default() -> None:
    policies = _upstream("").resilience_policies()
    assert not policies.enabled
    assert policies.for_method("/orders.v1.Orders/Get") is None


def test_retry_keys_become_a_policy_with_the_documented_defaults() -> None:
    upstream = _upstream("""
    retry: {max_attempts: 3, methods: ["/orders.v1.Orders/Get"], per_try_timeout_ms: 300}
""")
    policies = upstream.resilience_policies()
    policy = policies.for_method("/orders.v1.Orders/Get")
    assert isinstance(policy, RetryPolicy)
    assert policy.max_attempts == 3
    assert policy.retryable_codes == frozenset({"UNAVAILABLE"})
    assert policy.per_try_timeout_s == pytest.approx(0.3)
    assert policy.backoff == BackoffSettings()
    assert policy.buffer_bytes == 256 * 1024
    assert policies.budget == BudgetSettings(ratio=0.2, min_per_s=10.0, ttl_s=10.0)
    assert policies.for_method("/orders.v1.Orders/Create") is None


def test_hedging_keys_become_a_policy() -> None:
    upstream = _upstream("""
    retry: {max_attempts: 2, methods: ["/orders.v1.Orders/Get"], budget: {ratio: 0.1, min_per_s: 5}}
    hedging: {methods: ["/orders.v1.Orders/Search"], delay_ms: 40, max_attempts: 3}
""")
    policies = upstream.resilience_policies()
    hedge = policies.for_method("/orders.v1.Orders/Search")
    assert isinstance(hedge, HedgingPolicy)
    assert (hedge.delay_s, hedge.max_attempts) == (pytest.approx(0.04), 3)
    assert hedge.non_fatal_codes == frozenset({"UNAVAILABLE"})
    assert policies.budget.ratio == 0.1 and policies.budget.min_per_s == 5


@pytest.mark.parametrize(("extra", "key", "problem"), [
    ("retry: {max_attempts: 6, methods: ['/orders.v1.Orders/Get']}",
     "upstreams.orders.retry.max_attempts", "less than or equal to 5"),
    ("retry: {max_attempts: 3}", "upstreams.orders.retry.methods", "required"),
    ("retry: {max_attempts: 3, methods: ['Get']}", "upstreams.orders.retry.methods",
     "must be a method-path prefix"),
    ("retry: {methods: ['/o/'], retryable_codes: [NOPE]}", "upstreams.orders.retry.retryable_codes",
     "unknown gRPC status code"),
    ("retry: {methods: ['/o/'], retryable_codes: [OK]}",
     "upstreams.orders.retry.retryable_codes[0]", "unknown gRPC status code 'OK'"),
    ("retry: {methods: ['/o/'], budget: {ratio: 1.5}}", "upstreams.orders.retry.budget.ratio",
     ">= 0 and <= 1"),
    ("retry: {methods: ['/o/'], backoff: {base_ms: 300, max_ms: 100}}",
     "upstreams.orders.retry.backoff", "max_ms (100) must be >= base_ms (300)"),
    ("hedging: {methods: ['/o/'], max_attempts: 1}", "upstreams.orders.hedging.max_attempts",
     "greater than or equal to 2"),
    ("retry: {methods: ['/orders.v1.Orders/']}\n"
     "    hedging: {methods: ['/orders.v1.Orders/Search']}",
     "upstreams.orders", "retry.methods '/orders.v1.Orders/' and hedging.methods "
     "'/orders.v1.Orders/Search' overlap"),
])
def test_bad_keys_are_refused_naming_the_key(extra: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _upstream("    " + extra + "\n")
    text = "\n".join(caught.value.problems)
    assert key in text, text
    assert problem in text, text
