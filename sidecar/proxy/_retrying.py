"""Retries in the data path (gRFC A6), for all four call shapes.

A call of a method under the upstream's ``retry`` policy is admitted once and then runs as a
series of attempts, each on an endpoint the balancer picks preferring one not yet tried. A
failed attempt is tried again when :func:`~sidecar.proxy._attempts.retry_verdict` allows it
and the upstream's budget grants a token; otherwise its status (details, headers and trailers)
goes to the caller as without retries.

Commit: the caller sees nothing of an attempt until it is known to be the one: a unary
response at its end, a streamed response at its first message (its headers are held until
then), or its end when it ends without messages. From the first message on, a server or bidi
stream is never retried. Client-stream and bidi requests replay from a
:class:`~sidecar.proxy._request_buffer.RequestBuffer`.

The breaker hears one outcome per caller's call (the status the caller got, the duration
from the call's start); the balancer hears every attempt.

Threading: the proxy's event loop, in the call's task.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Final

import grpc

from sidecar.protection import MD_UPSTREAM, Admission, CallKind, CallScope, MetadataItem
from sidecar.proxy._attempts import (
    BUDGET,
    PREVIOUS_ATTEMPTS_KEY,
    EndpointTrip,
    Refusal,
    attempt_metadata,
    no_endpoints_details,
    pushback_values,
    retry_verdict,
)
from sidecar.proxy._request_buffer import RequestBuffer
from sidecar.proxy.upstream import Upstream
from sidecar.resilience import Backoff, RetryPolicy

__all__ = ["CallPlan", "commit_attempt", "forward_retried"]

_EOF: Final = grpc.aio.EOF
_OK: Final = grpc.StatusCode.OK
_CANCELLED: Final = grpc.StatusCode.CANCELLED
_DEADLINE_EXCEEDED: Final = grpc.StatusCode.DEADLINE_EXCEEDED
_UNAVAILABLE: Final = grpc.StatusCode.UNAVAILABLE
_UNKNOWN: Final = grpc.StatusCode.UNKNOWN
_NO_RETRY: Final = RetryPolicy(max_attempts=1, retryable_codes=frozenset(), buffer_bytes=0)
Trailers = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class CallPlan:
    """One caller's call as admitted: what every attempt of it shares."""

    upstream: Upstream
    admission: Admission
    method: str
    kind: CallKind
    request: bytes | None
    """The request message of a unary-request call (None: the caller streams them)."""
    context: Any
    metadata: list[MetadataItem]
    """The request metadata sent upstream (before ``grpc-previous-rpc-attempts``)."""
    scope: CallScope
    started: float
    deadline_at: float
    """``perf_counter()`` time the caller's deadline (or the upstream's timeout) ends."""
    extra_trailers: Trailers
    settled: bool = False
    """The admission was settled (the outcome counted): exactly once per call."""

    def settle(self, code: grpc.StatusCode | None, duration_s: float) -> None:
        if not self.settled:
            self.settled = True
            self.admission.settle(code, duration_s)

    def answer_trailers(self, attempt: int, trailing: Any) -> tuple[MetadataItem, ...]:
        previous: Trailers = (
            () if attempt == 1 else ((PREVIOUS_ATTEMPTS_KEY, str(attempt - 1)),))
        return (*(trailing or ()), *self.extra_trailers, *previous)

    async def send_headers(self, call: Any, attempt: int) -> None:
        initial = await call.initial_metadata()
        if initial:
            if attempt > 1:
                initial = (*initial, (PREVIOUS_ATTEMPTS_KEY, str(attempt - 1)))
            await self.context.send_initial_metadata(tuple(initial))

    def caller_left(self, trip: EndpointTrip | None, first_message_at: float | None) -> None:
        """The caller cancelled, or its deadline passed: settle and report once."""
        if self.settled:
            return
        ended = perf_counter()
        remaining = self.context.time_remaining()
        code = _DEADLINE_EXCEEDED if remaining is not None and remaining <= 0 else None
        if trip is not None:
            if code is None:
                trip.cancel()
            else:
                trip.finish(code in self.admission.guard.failure_codes, first_message_at or ended,
                            timed_out=first_message_at is None,
                            probe=self.admission.permit.probe)
        self.settle(code, (first_message_at or ended) - self.started)
        self.scope.finish(code or _CANCELLED, ended - self.started)


class _Failed(Exception):
    """An attempt ended with a status before it was committed."""

    def __init__(self, call: Any, error: grpc.aio.AioRpcError) -> None:
        super().__init__(error.code())
        self.call = call
        self.error = error


async def forward_retried(plan: CallPlan, policy: RetryPolicy) -> bytes | None:
    """Forward one call under ``policy``; returns the unary response (None for streams)."""
    return await _Retrying(plan, policy).run()


async def commit_attempt(plan: CallPlan, trip: EndpointTrip | None, attempt: int, call: Any,
                         error: grpc.aio.AioRpcError | None, *, answer: Any = None
                         ) -> bytes | None:
    """Make one attempt (number ``attempt``, chosen elsewhere, e.g. the hedge that won) the
    call's answer: its ``error`` (its trip already finished), or its ``answer`` (a unary
    response, or a stream's first message or EOF). ``trip`` None: there was no endpoint."""
    answering = _Retrying(plan, _NO_RETRY)
    answering.attempt = attempt
    if trip is None:
        await answering._no_endpoints()
        return None
    if error is not None:
        await answering._answer_failure(call, error)
        return None
    answering.trip = trip
    try:
        if plan.kind == "unary_unary" or plan.kind == "stream_unary":
            await answering._commit_unary(trip, call)
            result: bytes = answer
            return result
        await answering._commit_stream(trip, call, answer)
        return None
    except asyncio.CancelledError:
        call.cancel()
        plan.caller_left(answering.trip, answering.first_message_at)
        raise


class _Retrying:
    __slots__ = ("attempt", "buffer", "first_message_at", "plan", "policy", "pump", "trip")

    def __init__(self, plan: CallPlan, policy: RetryPolicy) -> None:
        self.plan = plan
        self.policy = policy
        self.attempt = 1
        self.trip: EndpointTrip | None = None
        self.first_message_at: float | None = None
        self.pump: asyncio.Task[None] | None = None
        self.buffer: RequestBuffer | None = None
        if plan.request is None:
            self.buffer = RequestBuffer(plan.context, policy.buffer_bytes)

    def _over_buffer(self) -> bool:
        if self.buffer is not None:
            return self.buffer.overflowed
        return len(self.plan.request or b"") > self.policy.buffer_bytes

    async def run(self) -> bytes | None:
        plan = self.plan
        upstream = plan.upstream
        backoff: Backoff | None = None  # made at the first failure: most calls never retry
        tried: list[Any] = []
        if self.buffer is not None:
            self.buffer.start()
        try:
            while True:
                endpoint = upstream.pick(tried)
                if endpoint is None:
                    await self._no_endpoints()
                    return None
                tried.append(endpoint)
                plan.scope.endpoint(endpoint.address)
                plan.scope.attempt_started(self.attempt, endpoint.address, False)
                self.trip = trip = EndpointTrip(upstream.balancer, endpoint)
                remaining = plan.deadline_at - perf_counter()
                per_try = self.policy.per_try_timeout_s
                bounded = per_try is not None and per_try < remaining
                timeout = per_try if bounded and per_try is not None else max(remaining, 0.001)
                try:
                    return await self._attempt(trip, timeout)
                except _Failed as failed:
                    code = failed.error.code()
                    if backoff is None:
                        backoff = self.policy.backoff.new_backoff()
                    verdict = retry_verdict(
                        self.policy, backoff, code=code,
                        per_try_timed_out=bounded and code is _DEADLINE_EXCEEDED,
                        attempts=self.attempt, committed=False,
                        over_buffer=self._over_buffer(),
                        pushback=pushback_values(failed.error.trailing_metadata()),
                        remaining_s=plan.deadline_at - perf_counter())
                    self._end_trip(trip, code)
                    if isinstance(verdict, tuple):
                        budget = upstream.budget
                        if budget is None or not budget.try_withdraw():
                            verdict = BUDGET
                    if isinstance(verdict, Refusal):
                        plan.scope.retry_refused(verdict.reason)
                    if not isinstance(verdict, tuple):
                        plan.scope.attempt_ended(self.attempt, code,
                                                 perf_counter() - trip.started, "failed")
                        await self._answer_failure(failed.call, failed.error)
                        return None  # not reached: the answer aborts
                    reason, delay_s = verdict
                    upstream.retries += 1
                    plan.scope.attempt_ended(self.attempt, code, perf_counter() - trip.started,
                                             "retried")
                    plan.scope.retry(reason, delay_s)
                    self.trip = None
                    await asyncio.sleep(delay_s)
                    self.attempt += 1
        except asyncio.CancelledError:
            current = self.trip
            if current is not None and not self.plan.settled:
                self.plan.scope.attempt_ended(self.attempt, None,
                                              perf_counter() - current.started, "failed")
            self.plan.caller_left(current, self.first_message_at)
            raise
        finally:
            self._stop_pump()
            if self.buffer is not None:
                self.buffer.close()

    def _end_trip(self, trip: EndpointTrip, code: grpc.StatusCode) -> None:
        failed = code in self.plan.admission.guard.failure_codes
        timed_out = code is _DEADLINE_EXCEEDED and self.first_message_at is None
        trip.finish(failed, perf_counter(), timed_out=timed_out,
                    probe=self.plan.admission.permit.probe)

    def _stop_pump(self) -> None:
        if self.pump is not None and not self.pump.done():
            self.pump.cancel()
        self.pump = None

    def _open(self, trip: EndpointTrip, timeout_s: float) -> Any:
        plan = self.plan
        multicallable = trip.connection.multicallable(plan.kind, plan.method)
        metadata = attempt_metadata(plan.metadata, self.attempt) or None
        if plan.request is not None:
            return multicallable(plan.request, timeout=timeout_s, metadata=metadata)
        call = multicallable(timeout=timeout_s, metadata=metadata)
        assert self.buffer is not None
        self.pump = asyncio.get_running_loop().create_task(self.buffer.replay(call))
        return call

    async def _attempt(self, trip: EndpointTrip, timeout_s: float) -> bytes | None:
        """Run one attempt to its commit and, once committed, to its end. Raises
        :class:`_Failed` when it ended with a status before committing."""
        kind = self.plan.kind
        call = self._open(trip, timeout_s)
        try:
            if kind == "unary_unary" or kind == "stream_unary":
                try:
                    response: bytes = await call
                except grpc.aio.AioRpcError as error:
                    raise _Failed(call, error) from None
                await self._commit_unary(trip, call)
                return response
            try:
                await call.initial_metadata()
                message = await call.read()
            except grpc.aio.AioRpcError as error:
                raise _Failed(call, error) from None
            await self._commit_stream(trip, call, message)
            return None
        except (_Failed, grpc.aio.AioRpcError):
            raise
        except asyncio.CancelledError:
            call.cancel()
            raise
        except BaseException:
            call.cancel()
            if self.trip is not None:  # not an answer's abort: something broke
                self._end_trip(trip, _UNKNOWN)
                self.plan.settle(_UNKNOWN, perf_counter() - self.plan.started)
                self.trip = None
            raise
        finally:
            self._stop_pump()

    async def _commit_unary(self, trip: EndpointTrip, call: Any) -> None:
        plan = self.plan
        answered = perf_counter()
        trip.finish(False, answered)
        self.trip = None
        plan.settle(_OK, answered - plan.started)
        plan.scope.attempt_ended(self.attempt, _OK, answered - trip.started, "committed")
        await plan.send_headers(call, self.attempt)
        trailing = plan.answer_trailers(self.attempt, await call.trailing_metadata())
        if trailing:
            plan.context.set_trailing_metadata(trailing)
        plan.scope.finish(_OK, answered - plan.started)

    async def _commit_stream(self, trip: EndpointTrip, call: Any, message: Any) -> None:
        """The attempt answered (a first message, or its end): it is the call's answer."""
        plan = self.plan
        context = plan.context
        if message is not _EOF:
            self.first_message_at = perf_counter()
        await plan.send_headers(call, self.attempt)
        try:
            while message is not _EOF:
                await context.write(message)
                message = await call.read()
        except grpc.aio.AioRpcError as error:
            code = error.code()
            refusal = retry_verdict(self.policy, self.policy.backoff.new_backoff(), code=code,
                                    per_try_timed_out=False, attempts=self.attempt,
                                    committed=True, over_buffer=False, pushback=(),
                                    remaining_s=0.0)
            if isinstance(refusal, Refusal):
                plan.scope.retry_refused(refusal.reason)
            plan.scope.attempt_ended(self.attempt, code, perf_counter() - trip.started,
                                     "failed")
            self._end_trip(trip, code)
            self.trip = None
            await self._answer_failure(call, error, headers_sent=True)
            return
        ended = perf_counter()
        trip.finish(False, self.first_message_at or ended)
        self.trip = None
        plan.settle(_OK, (self.first_message_at or ended) - plan.started)
        plan.scope.attempt_ended(self.attempt, _OK, ended - trip.started, "committed")
        trailing = plan.answer_trailers(self.attempt, await call.trailing_metadata())
        if trailing:
            context.set_trailing_metadata(trailing)
        plan.scope.finish(_OK, ended - plan.started)

    async def _answer_failure(self, call: Any, error: grpc.aio.AioRpcError,
                              headers_sent: bool = False) -> None:
        """The call's final status is this attempt's: settle once and answer it verbatim."""
        plan = self.plan
        ended = perf_counter()
        code = error.code()
        self.trip = None
        plan.settle(code, (self.first_message_at or ended) - plan.started)
        plan.scope.finish(code, ended - plan.started)
        if not headers_sent:
            await plan.send_headers(call, self.attempt)
        await plan.context.abort(code, error.details() or "",
                                 plan.answer_trailers(self.attempt, error.trailing_metadata()))

    async def _no_endpoints(self) -> None:
        plan = self.plan
        plan.settle(None, 0.0)  # nothing was sent: the breaker counts nothing
        plan.scope.finish(_UNAVAILABLE, perf_counter() - plan.started)
        await plan.context.abort(_UNAVAILABLE, no_endpoints_details(plan.upstream),
                                 ((MD_UPSTREAM, plan.upstream.name),))
