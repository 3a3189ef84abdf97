"""What retries and hedges share: one attempt's endpoint, and the rule deciding a retry.

A caller's call under a ``retry`` or ``hedging`` policy is admitted once (breaker permit and
concurrency slot, :func:`sidecar.protection.admit`) and settled once with the status the
caller got; each *attempt* goes to an endpoint of its own (:class:`EndpointTrip`), so the balancer's
latency estimate and outlier detection see every attempt, failed or cancelled ones included.

:func:`retry_verdict` is the whole of gRFC A6's "may this failed attempt be retried?" apart
from the budget, which is asked last (a token is spent only on a retry that is sent).

Threading: the proxy's event loop only; nothing here blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Final

import grpc

from sidecar.balancer import Balancer, Endpoint
from sidecar.protection import MetadataItem
from sidecar.proxy.upstream import Connection, EndpointLink, Upstream
from sidecar.resilience import STOP, Backoff, RetryPolicy, parse_pushback
from sidecar.resilience.pushback import PUSHBACK_KEY

__all__ = [
    "PREVIOUS_ATTEMPTS_KEY",
    "EndpointTrip",
    "Refusal",
    "attempt_metadata",
    "no_endpoints_details",
    "pushback_values",
    "retry_verdict",
]

PREVIOUS_ATTEMPTS_KEY: Final = "grpc-previous-rpc-attempts"
"""gRFC A6: sent upstream on every attempt after the first (the number of attempts before it),
and to the caller with the answer of a call that took more than one attempt."""
PER_TRY_TIMEOUT: Final = "per_try_timeout"
"""The retry reason when an attempt ran out of ``per_try_timeout_ms`` (not the caller's time)."""


class EndpointTrip:
    """One attempt's endpoint: counted in flight by the balancer from creation until
    :meth:`finish` or :meth:`cancel` (exactly one of them, once)."""

    __slots__ = ("_done", "balancer", "connection", "endpoint", "started")

    def __init__(self, balancer: Balancer[EndpointLink], endpoint: Endpoint[EndpointLink]
                 ) -> None:
        self.balancer = balancer
        self.endpoint = endpoint
        self.connection: Connection = endpoint.target.connection
        self.started = perf_counter()
        self._done = False
        balancer.start(endpoint)

    @property
    def done(self) -> bool:
        """The attempt's end was counted (:meth:`finish` or :meth:`cancel`)."""
        return self._done

    def finish(self, failed: bool, answered: float, *, timed_out: bool = False,
               probe: bool = False) -> None:
        """The attempt ended with a status (``failed``: one of the guard's failure codes);
        ``answered``: its first response message, or its end. ``timed_out``: it got no answer
        in time (the connection may be dead)."""
        if self._done:
            return
        self._done = True
        self.balancer.finish(self.endpoint, self.started, failed,
                             latency_s=answered - self.started)
        if timed_out:
            self.connection.timed_out(probe)
        else:
            self.connection.streak.count = 0

    def cancel(self) -> None:
        """The attempt was cancelled (a hedge that lost, or the caller left): nothing counted."""
        if self._done:
            return
        self._done = True
        self.balancer.cancel(self.endpoint)


def attempt_metadata(metadata: list[MetadataItem], attempt: int) -> list[MetadataItem]:
    """The request metadata of attempt number ``attempt`` (1 = the first)."""
    if attempt == 1:
        return metadata
    return [*metadata, (PREVIOUS_ATTEMPTS_KEY, str(attempt - 1))]


def pushback_values(trailing: Sequence[MetadataItem] | None) -> list[str]:
    """The ``grpc-retry-pushback-ms`` values among an attempt's trailers."""
    return [value if isinstance(value, str) else value.decode("ascii", "replace")
            for key, value in trailing or () if key == PUSHBACK_KEY]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A retry the status allowed but a rule forbade; ``reason`` as in
    :meth:`sidecar.protection.hooks.CallScope.retry_refused`."""

    reason: str


COMMITTED: Final = Refusal("committed")
BUFFER: Final = Refusal("buffer")
ATTEMPTS: Final = Refusal("attempts")
PUSHBACK: Final = Refusal("pushback")
DEADLINE: Final = Refusal("deadline")
BUDGET: Final = Refusal("budget")


def retry_verdict(policy: RetryPolicy, backoff: Backoff, *, code: grpc.StatusCode,
                  per_try_timed_out: bool, attempts: int, committed: bool, over_buffer: bool,
                  pushback: Sequence[str], remaining_s: float
                  ) -> tuple[str, float] | Refusal | None:
    """May the call be tried again after attempt number ``attempts`` ended with ``code``?

    None: the status is not retryable (nothing to report). A :class:`Refusal`: it was, but
    the call is committed, its request outgrew the buffer, it made ``max_attempts`` attempts,
    the server pushed back with a negative or malformed delay, or the delay would not fit in
    the ``remaining_s`` of the caller's deadline. Otherwise ``(reason, delay_s)``: the server's
    pushback replaces the backoff. The budget is not asked here.
    """
    if per_try_timed_out:
        reason = PER_TRY_TIMEOUT
    elif code.name in policy.retryable_codes:
        reason = code.name
    else:
        return None
    if committed:
        return COMMITTED
    if over_buffer:
        return BUFFER
    if attempts >= policy.max_attempts:
        return ATTEMPTS
    pushed = parse_pushback(pushback)
    if pushed is STOP:
        return PUSHBACK
    delay_s = backoff.delay_s(attempts) if pushed is None else pushed
    if delay_s >= remaining_s:
        return DEADLINE
    return reason, delay_s


def no_endpoints_details(upstream: Upstream) -> str:
    """The details of the UNAVAILABLE answer when ``upstream`` has no endpoint."""
    discovery = upstream.discovery
    why = ""
    if discovery is not None:
        # A failing source's error already names it ("file PATH: line 2: ..."); after a good
        # attempt an older error is not why the set is empty.
        if discovery.failing and discovery.last_error:
            why = f" ({discovery.last_error})"
        else:
            why = f" ({discovery.source.describe} returned none)"
    return f"upstream {upstream.name!r} has no endpoints{why}"
