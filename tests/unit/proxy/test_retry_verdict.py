"""The rule deciding whether a failed attempt is retried (gRFC A6), apart from the budget."""

from __future__ import annotations

from typing import Any

import grpc

from sidecar.proxy._attempts import (
    ATTEMPTS,
    BUFFER,
    COMMITTED,
    DEADLINE,
    PUSHBACK,
    attempt_metadata,
    pushback_values,
    retry_verdict,
)
from sidecar.resilience import Backoff, RetryPolicy

POLICY = RetryPolicy(max_attempts=3, methods=("/svc/",))
BACKOFF = Backoff(0.025, 0.25, 2.0, 0.0)
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def verdict(**overrides: Any) -> object:
    args: dict[str, Any] = {"code": UNAVAILABLE, "per_try_timed_out": False, "attempts": 1,
                            "committed": False, "over_buffer": False, "pushback": (),
                            "remaining_s": 5.0}
    args.update(overrides)
    return retry_verdict(POLICY, BACKOFF, **args)


def test_a_retryable_status_is_retried_after_the_backoff() -> None:
    assert verdict() == ("UNAVAILABLE", 0.025)
    assert verdict(attempts=2) == ("UNAVAILABLE", 0.05)


def test_a_status_not_listed_is_not_retried_and_nothing_is_reported() -> None:
    assert verdict(code=grpc.StatusCode.INVALID_ARGUMENT) is None
    assert verdict(code=grpc.StatusCode.DEADLINE_EXCEEDED) is None


def test_a_per_try_timeout_is_retried_whatever_the_codes() -> None:
    assert verdict(code=grpc.StatusCode.DEADLINE_EXCEEDED,
                   per_try_timed_out=True) == ("per_try_timeout", 0.025)


def test_each_rule_refuses_with_its_reason() -> None:
    assert verdict(committed=True) is COMMITTED
    assert verdict(over_buffer=True) is BUFFER
    assert verdict(attempts=3) is ATTEMPTS
    assert verdict(pushback=["-1"]) is PUSHBACK
    assert verdict(pushback=["soon"]) is PUSHBACK
    assert verdict(remaining_s=0.02) is DEADLINE


def test_the_server_pushback_replaces_the_backoff_and_must_fit_the_deadline() -> None:
    assert verdict(pushback=["400"]) == ("UNAVAILABLE", 0.4)
    assert verdict(pushback=["0"]) == ("UNAVAILABLE", 0.0)
    assert verdict(pushback=["400"], remaining_s=0.3) is DEADLINE


def test_retry_attempts_carry_the_number_of_previous_attempts() -> None:
    metadata: list[tuple[str, str | bytes]] = [("k", "v")]
    assert attempt_metadata(metadata, 1) is metadata
    assert attempt_metadata(metadata, 3) == [("k", "v"), ("grpc-previous-rpc-attempts", "2")]


def test_pushback_values_are_read_from_the_trailers() -> None:
    trailers = (("a", "1"), ("grpc-retry-pushback-ms", "10"), ("grpc-retry-pushback-ms", b"2"))
    assert pushback_values(trailers) == ["10", "2"]
    assert pushback_values(None) == []
