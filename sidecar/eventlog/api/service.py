"""``sidecar.v1.EventLog``: the gRPC service over an :class:`EventStore` (the calls only).

What a call goes through: the interceptors the server installs (bearer token, decode guard),
admission for Append (:mod:`sidecar.eventlog.api.admission`), field validation
(:mod:`sidecar.eventlog.api.validation`: INVALID_ARGUMENT naming the field), then the store.
``ConflictError`` and ``ChainError`` (a retention anchor's refusal included) become
FAILED_PRECONDITION; any other store failure UNAVAILABLE. Breaker status answers come from the
projection follower's views. The assembly (ports, health, reflection, metrics, lifecycle) is
:mod:`sidecar.eventlog.server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, NoReturn

import grpc

from sidecar.eventlog.api import validation
from sidecar.eventlog.api.admission import AppendAdmission, Refusal
from sidecar.eventlog.api.status_protos import (
    filter_from_proto,
    upstream_status_proto,
)
from sidecar.eventlog.api.subscription import (
    SubscriberTooSlow,
    Subscription,
    SubscriptionEnded,
)
from sidecar.eventlog.audit import verify
from sidecar.eventlog.event_protos import to_proto
from sidecar.eventlog.metrics import AppendCounters
from sidecar.eventlog.port import (
    ChainError,
    ConflictError,
    EventStore,
    InvalidEventError,
    StoreError,
)
from sidecar.eventlog.projections.follower import ProjectionFollower
from sidecar.eventlog.settings import (
    MIN_HEARTBEAT_INTERVAL_S,
    RESUME_METADATA_KEY,
    ServerSettings,
)
from sidecar.v1 import eventlog_pb2, eventlog_pb2_grpc

log = logging.getLogger("sidecar.eventlog.server")


async def _abort(
    context: grpc.aio.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    trailing: tuple[tuple[str, str], ...] = (),
) -> NoReturn:
    """End the call with ``code`` (``context.abort`` raises; this tells the type checker)."""
    await context.abort(code, message, trailing)
    raise AssertionError("unreachable: context.abort returned")


class EventLogService(eventlog_pb2_grpc.EventLogServicer):
    """The ``sidecar.v1.EventLog`` handlers (all on the server's event loop)."""

    def __init__(
        self,
        store: EventStore,
        settings: ServerSettings,
        follower: ProjectionFollower,
        counters: AppendCounters,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._store = store
        self._settings = settings
        self._follower = follower
        self._counters = counters
        self._clock_ns = clock_ns
        self._subscriptions: set[Subscription] = set()
        self._closing = False
        self.admission = AppendAdmission(settings.max_pending_appends)

    def end_subscriptions(self, reason: str) -> None:
        """End every subscription now (each with UNAVAILABLE and its resume position) and
        refuse new ones: a graceful shutdown must not wait out streams that never end."""
        self._closing = True
        for sub in list(self._subscriptions):
            sub.close(reason)

    # --- helpers -----------------------------------------------------------------------------

    def _limit(self, requested: int) -> int:
        if requested == 0:
            return self._settings.default_read_limit
        return min(requested, self._settings.max_read_limit)

    @staticmethod
    async def _invalid(context: grpc.aio.ServicerContext, problem: str) -> NoReturn:
        await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, problem)

    # --- Append ------------------------------------------------------------------------------

    async def Append(
        self, request: eventlog_pb2.AppendRequest, context: grpc.aio.ServicerContext
    ) -> eventlog_pb2.AppendResponse:
        """Admission first (see :mod:`sidecar.eventlog.api.admission`): over the limit, refuse at
        once with RESOURCE_EXHAUSTED and a retry hint; nothing is validated or stored."""
        ticket = self.admission.admit()
        self._counters.appends_pending = self.admission.pending
        if isinstance(ticket, Refusal):
            self._counters.refused(ticket.reason)
            await _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, ticket.message,
                         ticket.trailing_metadata())
        try:
            return await self._append(request, context)
        finally:
            self.admission.release(ticket)
            self._counters.appends_pending = self.admission.pending

    async def _append(
        self, request: eventlog_pb2.AppendRequest, context: grpc.aio.ServicerContext
    ) -> eventlog_pb2.AppendResponse:
        try:
            records = validation.append_records(request, self._settings.max_batch_events)
        except validation.InvalidField as exc:
            self._counters.rejected("invalid")
            await self._invalid(context, str(exc))
        try:
            outcomes = await self._store.append(records)
        except ConflictError as exc:
            self._counters.rejected("conflict")
            await _abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"conflict: stream {exc.stream!r} version {exc.version} (event {exc.event_id}): "
                f"expected {exc.expected}; actual {exc.actual}",
            )
        except ChainError as exc:
            self._counters.rejected("chain")
            await _abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"hash chain: stream {exc.stream!r} version {exc.version} "
                f"(event {exc.event_id}): {exc}",
            )
        except InvalidEventError as exc:
            self._counters.rejected("invalid")
            where = next(
                (f"events[{i}]." for i, r in enumerate(records) if r.event_id == exc.event_id), ""
            )
            await self._invalid(context, f"{where}{exc.field}: {exc.problem}")
        except StoreError as exc:
            self._counters.rejected("store")
            log.error("append failed: %s", exc)
            await _abort(context, grpc.StatusCode.UNAVAILABLE, f"store: {exc}")
        duplicates = sum(1 for o in outcomes if o.duplicate)
        self._counters.appended(len(outcomes) - duplicates, duplicates)
        return eventlog_pb2.AppendResponse(
            results=[
                eventlog_pb2.AppendResult(
                    event_id=o.event_id,
                    global_position=o.global_position,
                    version=o.version,
                    duplicate=o.duplicate,
                )
                for o in outcomes
            ]
        )

    # --- reads -------------------------------------------------------------------------------

    async def ReadStream(
        self, request: eventlog_pb2.ReadStreamRequest, context: grpc.aio.ServicerContext
    ) -> eventlog_pb2.ReadStreamResponse:
        try:
            validation.split_stream(request.stream, "stream")
        except validation.InvalidField as exc:
            await self._invalid(context, str(exc))
        from_version = max(int(request.from_version), 1)
        limit = self._limit(request.limit)
        events = await self._read(
            context, self._store.read_stream(request.stream, from_version, limit)
        )
        anchor = await self._read(context, self._store.anchor(request.stream))
        next_version = events[-1].version + 1 if events else from_version
        return eventlog_pb2.ReadStreamResponse(
            events=[to_proto(e) for e in events], next_version=next_version,
            retention_anchor_version=anchor.version if anchor is not None else 0,
            retention_anchor_hash=anchor.hash if anchor is not None else b"",
        )

    async def ReadAll(
        self, request: eventlog_pb2.ReadAllRequest, context: grpc.aio.ServicerContext
    ) -> eventlog_pb2.ReadAllResponse:
        try:
            validation.validate_filter(request.filter)
        except validation.InvalidField as exc:
            await self._invalid(context, str(exc))
        from_position = max(int(request.from_position), 1)
        limit = self._limit(request.limit)
        # The head is read first: a short page then proves every position <= head was scanned.
        head = await self._read(context, self._store.head_position())
        events = await self._read(
            context, self._store.read_all(from_position, limit, filter_from_proto(request.filter))
        )
        last = events[-1].global_position if events else 0
        next_position = last + 1 if events else from_position
        if len(events) < limit:
            next_position = max(next_position, head + 1)
        return eventlog_pb2.ReadAllResponse(
            events=[to_proto(e) for e in events],
            next_position=next_position,
            head_position=max(head, last),
        )

    async def _read(self, context: grpc.aio.ServicerContext, pending: Any) -> Any:
        try:
            return await pending
        except StoreError as exc:
            log.error("read failed: %s", exc)
            await _abort(context, grpc.StatusCode.UNAVAILABLE, f"store: {exc}")

    # --- Subscribe ---------------------------------------------------------------------------

    async def Subscribe(
        self, request: eventlog_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> None:
        try:
            validation.validate_filter(request.filter)
        except validation.InvalidField as exc:
            await self._invalid(context, str(exc))
        settings = self._settings
        if self._closing:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, "the event log is shutting down")
        if self._counters.subscribers >= settings.max_subscribers:
            await _abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many subscribers: {self._counters.subscribers} being served "
                f"(max_subscribers {settings.max_subscribers}); retry later",
            )
        heartbeat_s = (
            max(request.heartbeat_interval_ms / 1000, MIN_HEARTBEAT_INTERVAL_S)
            if request.heartbeat_interval_ms
            else settings.default_heartbeat_interval_s
        )
        from_position = max(int(request.from_position), 1)
        sub = Subscription(
            self._store,
            from_position,
            filter_from_proto(request.filter),
            buffer_events=settings.subscriber_buffer_events,
            page_events=settings.subscribe_page_events,
            live_wait_s=min(settings.live_wait_s, heartbeat_s),
        )
        reader = asyncio.create_task(sub.run(), name="subscription-reader")
        ended = asyncio.create_task(sub.ended.wait(), name="subscription-ended")
        last_sent = from_position - 1
        self._counters.subscribers += 1
        self._subscriptions.add(sub)
        try:
            while True:
                if sub.ended.is_set():
                    await self._end_subscription(context, sub, last_sent)
                try:
                    event = await sub.get(heartbeat_s)
                except SubscriptionEnded:
                    await self._end_subscription(context, sub, last_sent)
                if event is None:
                    message = eventlog_pb2.SubscribeResponse(
                        heartbeat=eventlog_pb2.Heartbeat(
                            head_position=sub.known_head,
                            resume_position=sub.resume_position(last_sent),
                        )
                    )
                    await context.write(message)
                    continue
                write = asyncio.ensure_future(
                    context.write(eventlog_pb2.SubscribeResponse(event=to_proto(event)))
                )
                await asyncio.wait({write, ended}, return_when=asyncio.FIRST_COMPLETED)
                # A write that was handed to the transport goes out before the status does.
                last_sent = event.global_position
                if write.done():
                    write.result()
                    continue
                write.cancel()
                await self._end_subscription(context, sub, last_sent)
        finally:
            self._subscriptions.discard(sub)
            self._counters.subscribers -= 1
            reader.cancel()
            ended.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _end_subscription(
        self, context: grpc.aio.ServicerContext, sub: Subscription, last_sent: int
    ) -> NoReturn:
        resume = sub.resume_position(last_sent)
        trailer = ((RESUME_METADATA_KEY, str(resume)),)
        reason = sub.end_reason
        if isinstance(reason, SubscriberTooSlow):
            self._counters.subscriber_dropped()
            await _abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{reason} (buffer of {reason.buffer_events} events full); "
                f"resume from position {resume}",
                trailer,
            )
        await _abort(
            context,
            grpc.StatusCode.UNAVAILABLE,
            f"{reason or 'the subscription ended'}; resume from position {resume}",
            trailer,
        )

    # --- projections -------------------------------------------------------------------------

    async def GetBreakerStatus(
        self, request: eventlog_pb2.GetBreakerStatusRequest, context: grpc.aio.ServicerContext
    ) -> eventlog_pb2.UpstreamBreakerStatus:
        for name in ("service", "upstream"):
            if not getattr(request, name):
                await self._invalid(context, f"{name}: must not be empty")
        found = self._follower.views().upstreams(
            self._clock_ns(), service=request.service, upstream=request.upstream
        )
        if not found:
            await _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"no breaker of service {request.service!r} for upstream {request.upstream!r} "
                f"(projections at position {self._follower.position})",
            )
        return upstream_status_proto(found[0])

    async def ListBreakerStatus(
        self, request: eventlog_pb2.ListBreakerStatusRequest, context: grpc.aio.ServicerContext
    ) -> eventlog_pb2.ListBreakerStatusResponse:
        statuses = self._follower.views().upstreams(
            self._clock_ns(), service=request.service, upstream=request.upstream
        )
        position = self._follower.position
        return eventlog_pb2.ListBreakerStatusResponse(
            breakers=[upstream_status_proto(u) for u in statuses],
            projection_position=position,
            head_position=max(self._follower.head_position, position),
        )

    # --- audit -------------------------------------------------------------------------------

    async def Verify(
        self, request: eventlog_pb2.VerifyRequest, context: grpc.aio.ServicerContext
    ) -> eventlog_pb2.VerifyResponse:
        try:
            report = await verify(self._store)
        except StoreError as exc:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, f"store: {exc}")
        response = eventlog_pb2.VerifyResponse(
            ok=report.ok,
            events_checked=report.events_checked,
            streams_checked=report.streams_checked,
        )
        if report.first_break is not None:
            b = report.first_break
            response.first_break.stream = b.stream
            response.first_break.version = b.version
            response.first_break.global_position = b.global_position
            response.first_break.reason = b.problem
        return response


# --- assembly ------------------------------------------------------------------------------------
