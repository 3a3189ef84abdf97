"""The sidecar's admin API (``sidecar.v1.SidecarAdmin`` on ``admin_listen``).

Operators list breakers, read one breaker's full view (state, mode, window, open-until, trip
streak and the time until it next decays, last transition, and its upstream's concurrency
limit: in flight, limit, overflows) and change a breaker's mode at runtime (e.g.
``forced_open`` during an incident, ``metrics_only`` while adopting). Errors name the field:
NOT_FOUND for an unknown breaker (listing the known ones), INVALID_ARGUMENT for a missing name
or mode.

Threading: handlers run on the proxy's event loop; reading a breaker view takes its lock for an
O(1) copy and never blocks the data path for longer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NoReturn, TypeAlias

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from sidecar.breaker import BreakerView, CircuitBreaker
from sidecar.breaker_protos import MODE_TO_PROTO, PROTO_TO_MODE, STATE_TO_PROTO, window_to_proto
from sidecar.protection import BreakerRegistry, Bulkhead
from sidecar.proxy.admin_endpoints import UpstreamLookup, list_endpoints
from sidecar.proxy.upstream import Upstream
from sidecar.v1 import admin_pb2, admin_pb2_grpc, events_pb2

__all__ = ["SidecarAdminServicer", "breaker_info", "upstream_of"]


Context: TypeAlias = Any  # grpc.aio.ServicerContext; grpc ships no type hints
LimitLookup: TypeAlias = Callable[[str], Bulkhead | None]
"""The concurrency limit guarding the calls a breaker (by name) judges, if known."""


def upstream_of(breaker: str) -> str:
    """Breaker names are ``upstream`` or, with ``per_method``, ``upstream/pkg.Svc/Method``."""
    return breaker.split("/", 1)[0]


async def _abort(context: Context, code: grpc.StatusCode, details: str) -> NoReturn:
    await context.abort(code, details)
    raise AssertionError("context.abort returned")  # it always raises


def _timestamp(unix_s: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(unix_s * 1e9))
    return stamp


def breaker_info(view: BreakerView, limit: Bulkhead | None = None) -> admin_pb2.BreakerInfo:
    """The wire form of a breaker view (and of its upstream's concurrency ``limit``)."""
    info = admin_pb2.BreakerInfo(
        name=view.name,
        upstream=upstream_of(view.name),
        state=STATE_TO_PROTO[view.state],
        mode=MODE_TO_PROTO[view.mode],
        window=window_to_proto(view.snapshot),
        trip_streak=view.trip_streak,
        half_open_in_flight=view.half_open_in_flight,
        open_duration_ms=round(view.open_duration_s * 1000.0),
        # Rounded up: a countdown that reads 0 while the streak has not yet fallen would lie.
        streak_decay_in_ms=math.ceil(view.streak_decay_in_s * 1000.0),
    )
    if view.open_until_wall is not None:
        info.open_until.CopyFrom(_timestamp(view.open_until_wall))
    if limit is not None:
        info.concurrency.CopyFrom(admin_pb2.ConcurrencyLimit(
            in_flight=max(0, limit.in_flight),
            max_concurrent_requests=limit.limit,
            overflows=limit.overflows,
            algorithm="fixed",
            limit=limit.limit,
        ))
    last = view.last_transition
    if last is not None:
        info.last_transition.CopyFrom(admin_pb2.LastTransition(
            from_state=STATE_TO_PROTO[last.from_state],
            to_state=STATE_TO_PROTO[last.to_state],
            reason=last.reason,
            at=_timestamp(last.at_wall),
        ))
    return info


def add_resilience(info: admin_pb2.BreakerInfo, upstream: Upstream) -> None:
    """The upstream's adaptive limit (when on) and retry budget (when retries or hedging are
    configured) into ``info``."""
    limiter = upstream.guard.limiter
    if limiter is not None:
        concurrency = info.concurrency
        concurrency.algorithm = limiter.algorithm
        concurrency.limit = limiter.limit
        concurrency.shed = limiter.shed_total
        concurrency.shedding = limiter.shedding
    budget = upstream.budget
    if budget is not None:
        info.retry_budget.CopyFrom(admin_pb2.RetryBudgetInfo(
            ratio=budget.ratio, min_per_s=budget.min_per_s, available=budget.available(),
            retries=upstream.retries, hedges=upstream.hedges, exhausted=budget.exhausted))


class SidecarAdminServicer(admin_pb2_grpc.SidecarAdminServicer):
    """``sidecar.v1.SidecarAdmin`` over a :class:`BreakerRegistry`; ``limit_of`` finds the
    concurrency limit behind a breaker (None: answers carry no ``concurrency``)."""

    def __init__(self, registry: BreakerRegistry, limit_of: LimitLookup | None = None,
                 upstreams: UpstreamLookup | None = None) -> None:
        self._registry = registry
        self._limit_of = limit_of
        self._upstreams = upstreams

    async def ListEndpoints(self, request: admin_pb2.ListEndpointsRequest,
                            context: Context) -> admin_pb2.ListEndpointsResponse:
        answer = list_endpoints(self._upstreams() if self._upstreams else {}, request.upstream)
        if isinstance(answer, str):
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"upstream: {answer}")
        return answer

    def _info(self, breaker: CircuitBreaker) -> admin_pb2.BreakerInfo:
        limit = self._limit_of(breaker.name) if self._limit_of is not None else None
        info = breaker_info(breaker.view(), limit)
        if self._upstreams is not None:
            upstream = self._upstreams().get(upstream_of(breaker.name))
            if upstream is not None:
                add_resilience(info, upstream)
        return info

    async def ListBreakers(self, request: admin_pb2.ListBreakersRequest,
                           context: Context) -> admin_pb2.ListBreakersResponse:
        return admin_pb2.ListBreakersResponse(
            breakers=[self._info(b) for b in self._registry.breakers()]
        )

    async def GetBreaker(self, request: admin_pb2.GetBreakerRequest,
                         context: Context) -> admin_pb2.BreakerInfo:
        breaker = await self._find(request.name, context)
        return self._info(breaker)

    async def SetBreakerMode(self, request: admin_pb2.SetBreakerModeRequest,
                             context: Context) -> admin_pb2.BreakerInfo:
        mode = PROTO_TO_MODE.get(request.mode)
        if mode is None:
            choices = ", ".join(events_pb2.BreakerMode.Name(v) for v in MODE_TO_PROTO.values())
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                         f"mode: must be one of {choices}, got {request.mode}")
        breaker = await self._find(request.name, context)
        breaker.set_mode(mode, source="admin")
        return self._info(breaker)

    async def _find(self, name: str, context: Context) -> CircuitBreaker:
        if not name:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                         "name: required (a breaker name; see ListBreakers)")
        breaker = self._registry.get(name)
        if breaker is None:
            known = ", ".join(self._registry.names()) or "none"
            await _abort(context, grpc.StatusCode.NOT_FOUND,
                         f"name: no breaker named {name!r}; known breakers: {known}")
        return breaker
