"""Hedged calls (gRFC A6 hedging) in the data path.

A call of a method under the upstream's ``hedging`` policy goes to one endpoint; when no
response came after ``delay_ms``, the same request goes to another endpoint (one not yet
tried, as the balancer prefers), and so on up to ``max_attempts`` attempts in all. A status in
``non_fatal_codes`` sends the next hedge at once (after the server's pushback, if it sent one;
a negative pushback stops hedging). The first attempt to answer (a unary response, a stream's
first message, or a stream's clean end) wins: it is committed exactly as a retried call's
attempt is, and every other attempt is cancelled (its upstream sees CANCELLED). A fatal status
is the call's answer at once. Every hedge takes a token from the budget retries use.

Only unary-request calls (unary and server-streaming) are hedged: a hedge sends the request
again, which for a client stream would mean buffering it for several readers. A hedged method
called with a streamed request is forwarded as one attempt.

Threading: the proxy's event loop, in the call's task (attempts run as child tasks).
"""

from __future__ import annotations

import asyncio
import contextlib
from time import perf_counter
from typing import Any, Final

import grpc

from sidecar.proxy._attempts import EndpointTrip, attempt_metadata, pushback_values
from sidecar.proxy._retrying import CallPlan, commit_attempt, forward_retried
from sidecar.resilience import STOP, HedgingPolicy, RetryPolicy, parse_pushback

__all__ = ["forward_hedged"]

_ONE_ATTEMPT: Final = RetryPolicy(max_attempts=1, retryable_codes=frozenset(), buffer_bytes=0)
"""What a hedged method called with a streamed request gets: one attempt, nothing buffered."""
_DEADLINE_EXCEEDED: Final = grpc.StatusCode.DEADLINE_EXCEEDED


async def forward_hedged(plan: CallPlan, policy: HedgingPolicy) -> bytes | None:
    """Forward one call under ``policy``; returns the unary response (None for streams)."""
    if plan.request is None:
        return await forward_retried(plan, _ONE_ATTEMPT)
    return await _Hedging(plan, policy).run()


class _Attempt:
    __slots__ = ("call", "number", "task", "trip")

    def __init__(self, number: int, trip: EndpointTrip, call: Any,
                 task: asyncio.Task[Any]) -> None:
        self.number = number
        self.trip = trip
        self.call = call
        self.task = task


async def _answer(kind: str, call: Any) -> Any:
    """An attempt's answer: the unary response, or a stream's first message (or EOF)."""
    if kind == "unary_unary":
        return await call
    await call.initial_metadata()
    return await call.read()


class _Hedging:
    __slots__ = ("attempts", "hedging", "next_at", "plan", "policy", "tried")

    def __init__(self, plan: CallPlan, policy: HedgingPolicy) -> None:
        self.plan = plan
        self.policy = policy
        self.attempts: list[_Attempt] = []
        self.tried: list[Any] = []
        self.hedging = True
        self.next_at = plan.started + policy.delay_s

    def _start(self) -> bool:
        plan = self.plan
        endpoint = plan.upstream.pick(self.tried)
        if endpoint is None:
            return False
        self.tried.append(endpoint)
        number = len(self.attempts) + 1
        plan.scope.endpoint(endpoint.address)
        plan.scope.attempt_started(number, endpoint.address, number > 1)
        trip = EndpointTrip(plan.upstream.balancer, endpoint)
        multicallable = trip.connection.multicallable(plan.kind, plan.method)
        timeout_s = max(plan.deadline_at - perf_counter(), 0.001)
        call = multicallable(plan.request, timeout=timeout_s,
                             metadata=attempt_metadata(plan.metadata, number) or None)
        task = asyncio.get_running_loop().create_task(_answer(plan.kind, call))
        self.attempts.append(_Attempt(number, trip, call, task))
        self.next_at = perf_counter() + self.policy.delay_s
        return True

    def _hedge(self) -> None:
        """Send the next hedge if the budget and the deadline allow it."""
        plan = self.plan
        if perf_counter() >= plan.deadline_at:
            plan.scope.retry_refused("deadline")
            self.hedging = False
            return
        budget = plan.upstream.budget
        if budget is None or not budget.try_withdraw():
            plan.scope.retry_refused("budget")
            self.hedging = False
            return
        plan.upstream.hedges += 1
        plan.scope.hedge(len(self.attempts) + 1)
        if not self._start():
            self.hedging = False

    def _cancel_others(self, winner: _Attempt | None) -> None:
        for attempt in self.attempts:
            if attempt.task.done() and not attempt.task.cancelled():
                attempt.task.exception()  # retrieved: a late failure is no loose end
            if attempt is winner or (attempt.task.done() and attempt.trip.done):
                continue
            attempt.call.cancel()
            attempt.task.cancel()
            if not attempt.trip.done:
                attempt.trip.cancel()
                self.plan.scope.attempt_ended(attempt.number, None,
                                              perf_counter() - attempt.trip.started, "lost")

    async def run(self) -> bytes | None:
        plan = self.plan
        guard = plan.admission.guard
        last: tuple[_Attempt, grpc.aio.AioRpcError] | None = None
        committing: _Attempt | None = None
        try:
            if not self._start():
                return await commit_attempt(plan, None, 1, None, None)
            while True:
                running = [a.task for a in self.attempts if not a.task.done()]
                more = self.hedging and len(self.attempts) < self.policy.max_attempts
                if not running and not more:
                    assert last is not None
                    attempt, error = last
                    return await commit_attempt(plan, attempt.trip, attempt.number,
                                                attempt.call, error)
                wait_s = max(self.next_at - perf_counter(), 0.0) if more else None
                if not running:
                    await asyncio.sleep(wait_s or 0.0)
                    done: set[asyncio.Task[Any]] = set()
                else:
                    done, _ = await asyncio.wait(running, timeout=wait_s,
                                                 return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    self._hedge()
                    continue
                for attempt in self.attempts:
                    if attempt.task not in done:
                        continue
                    error = attempt.task.exception()
                    if error is None:
                        committing = attempt
                        self._cancel_others(attempt)
                        return await commit_attempt(plan, attempt.trip, attempt.number,
                                                    attempt.call, None,
                                                    answer=attempt.task.result())
                    if not isinstance(error, grpc.aio.AioRpcError):
                        raise error
                    code = error.code()
                    attempt.trip.finish(code in guard.failure_codes, perf_counter(),
                                        timed_out=code is _DEADLINE_EXCEEDED,
                                        probe=plan.admission.permit.probe)
                    if code.name not in self.policy.non_fatal_codes:
                        self._cancel_others(attempt)
                        plan.scope.attempt_ended(attempt.number, code,
                                                 perf_counter() - attempt.trip.started, "failed")
                        return await commit_attempt(plan, attempt.trip, attempt.number,
                                                    attempt.call, error)
                    last = (attempt, error)
                    pushed = parse_pushback(pushback_values(error.trailing_metadata()))
                    if pushed is STOP:
                        plan.scope.retry_refused("pushback")
                        self.hedging = False
                    else:
                        self.next_at = perf_counter() + (pushed or 0.0)
                    follows = ((self.hedging and len(self.attempts) < self.policy.max_attempts)
                               or any(not a.task.done() for a in self.attempts))
                    plan.scope.attempt_ended(attempt.number, code,
                                             perf_counter() - attempt.trip.started,
                                             "retried" if follows else "failed")
        except asyncio.CancelledError:
            if committing is None:
                for attempt in self.attempts:
                    with contextlib.suppress(Exception):
                        attempt.call.cancel()
                    attempt.task.cancel()
                    if not attempt.trip.done:
                        attempt.trip.cancel()
                plan.caller_left(None, None)
            raise
        finally:
            for attempt in self.attempts:
                if not attempt.task.done():
                    attempt.task.cancel()
