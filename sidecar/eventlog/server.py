"""The event log's gRPC server: ``sidecar.v1.EventLog`` over an :class:`EventStore`.

What a call goes through:

1. the :class:`~sidecar.eventlog.auth.BearerTokenInterceptor` (when a token is configured);
2. field validation (:mod:`sidecar.eventlog.validation`): INVALID_ARGUMENT naming the field;
3. the store. ``ConflictError`` and ``ChainError`` become FAILED_PRECONDITION (a conflict names
   what was expected and what is stored); any other store failure UNAVAILABLE.

Projections run inside the server: a :class:`~sidecar.eventlog.follower.ProjectionFollower`
task folds every appended event into the breaker-status read model, and GetBreakerStatus /
ListBreakerStatus and the Prometheus collector answer from it.

The server also serves ``grpc.health.v1`` and reflection, and stops gracefully on SIGTERM or
SIGINT: health goes NOT_SERVING, new calls are refused, in-flight calls get
``shutdown_grace_s`` to finish, then the projection checkpoint is saved and the store closed.

Threading: one asyncio event loop runs the gRPC server, the projection follower and every
subscription; the store owns its own threads. The metrics HTTP endpoint runs on
prometheus_client's thread and reads only immutable projection snapshots.

Example::

    settings = ServerSettings(store_url="sqlite:///tmp/log.db", listen="127.0.0.1:7070")
    asyncio.run(serve(settings))        # until SIGTERM
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, NoReturn

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from sidecar.eventlog import validation
from sidecar.eventlog.admission import AppendAdmission, Refusal
from sidecar.eventlog.audit import verify
from sidecar.eventlog.auth import BearerTokenInterceptor
from sidecar.eventlog.breaker_views import InstanceStatus, UpstreamStatus
from sidecar.eventlog.follower import ProjectionFollower
from sidecar.eventlog.metrics import AppendCounters, loop_snapshot, start_metrics_server
from sidecar.eventlog.nats_auth import redact_url
from sidecar.eventlog.records import to_proto
from sidecar.eventlog.retention_job import RetentionCollector, RetentionJob
from sidecar.eventlog.settings import (
    MIN_HEARTBEAT_INTERVAL_S,
    RESUME_METADATA_KEY,
    ServerSettings,
    parse_host_port,
)
from sidecar.eventlog.store import (
    NO_FILTER,
    ChainError,
    ConflictError,
    EventFilter,
    EventStore,
    InvalidEventError,
    StoreError,
)
from sidecar.eventlog.stores import store_kind
from sidecar.eventlog.subscription import (
    SubscriberTooSlow,
    Subscription,
    SubscriptionEnded,
)
from sidecar.rpc_guard import DecodeGuardInterceptor
from sidecar.v1 import eventlog_pb2, eventlog_pb2_grpc, events_pb2

log = logging.getLogger("sidecar.eventlog.server")

SERVICE_NAME: Final = "sidecar.v1.EventLog"

_UNSPECIFIED: Final = events_pb2.BREAKER_STATE_UNSPECIFIED
_STATE_ENUM: Final[dict[str, events_pb2.BreakerState]] = {
    "CLOSED": events_pb2.BREAKER_STATE_CLOSED,
    "OPEN": events_pb2.BREAKER_STATE_OPEN,
    "HALF_OPEN": events_pb2.BREAKER_STATE_HALF_OPEN,
}


async def _abort(
    context: grpc.aio.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    trailing: tuple[tuple[str, str], ...] = (),
) -> NoReturn:
    """End the call with ``code`` (``context.abort`` raises; this tells the type checker)."""
    await context.abort(code, message, trailing)
    raise AssertionError("unreachable: context.abort returned")


def _timestamp(message: Any, ns: int) -> None:
    message.seconds, message.nanos = divmod(ns, 1_000_000_000)


def _transition_counts(
    counts: tuple[tuple[str, str, int], ...],
) -> list[eventlog_pb2.TransitionCount]:
    return [
        eventlog_pb2.TransitionCount(
            from_state=_STATE_ENUM.get(f, _UNSPECIFIED),
            to_state=_STATE_ENUM.get(t, _UNSPECIFIED),
            count=n,
        )
        for f, t, n in counts
    ]


def instance_status_proto(status: InstanceStatus) -> eventlog_pb2.InstanceBreakerStatus:
    """The wire form of one breaker's projected status."""
    message = eventlog_pb2.InstanceBreakerStatus(
        service=status.service,
        instance=status.instance,
        upstream=status.upstream,
        state=_STATE_ENUM.get(status.state, _UNSPECIFIED),
        transitions=status.transitions,
        seconds_open=status.seconds_open,
        mean_time_to_recover_s=status.mean_time_to_recover_s,
        recoveries=status.recoveries,
        transition_counts=_transition_counts(status.transition_counts),
    )
    if status.open_since_ns:
        _timestamp(message.open_since, status.open_since_ns)
    if status.last_transition_at_ns:
        _timestamp(message.last_transition_at, status.last_transition_at_ns)
    return message


def upstream_status_proto(status: UpstreamStatus) -> eventlog_pb2.UpstreamBreakerStatus:
    """The wire form of one (service, upstream)'s projected status."""
    message = eventlog_pb2.UpstreamBreakerStatus(
        service=status.service,
        upstream=status.upstream,
        state=_STATE_ENUM.get(status.state, _UNSPECIFIED),
        instances_open=status.instances_open,
        instances_known=status.instances_known,
        transitions=status.transitions,
        seconds_open=status.seconds_open,
        mean_time_to_recover_s=status.mean_time_to_recover_s,
        recoveries=status.recoveries,
        transition_counts=_transition_counts(status.transition_counts),
        instances=[instance_status_proto(i) for i in status.instances],
    )
    if status.open_since_ns:
        _timestamp(message.open_since, status.open_since_ns)
    return message


def filter_from_proto(flt: eventlog_pb2.EventFilter) -> EventFilter:
    """The store filter for a validated request filter (unset times are unbounded)."""
    if not flt.ListFields():
        return NO_FILTER
    return EventFilter(
        service=flt.service,
        instance=flt.instance,
        upstream=flt.upstream,
        types=tuple(flt.types),
        from_time_ns=flt.from_time.ToNanoseconds() if flt.HasField("from_time") else 0,
        to_time_ns=flt.to_time.ToNanoseconds() if flt.HasField("to_time") else 0,
    )


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
        """Admission first (see :mod:`sidecar.eventlog.admission`): over the limit, refuse at
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


def server_options(settings: ServerSettings) -> list[tuple[str, Any]]:
    """gRPC channel arguments carrying the message-size limits."""
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
    ]


def _credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    if settings.tls is None:
        return None
    key, cert, client_ca = settings.tls.read()
    return grpc.ssl_server_credentials(
        [(key, cert)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


class EventLogServer:
    """The assembled server: gRPC API, health, reflection, projection follower, metrics.

    ``start`` binds and starts everything; ``stop`` is the graceful shutdown. Both run on the
    event loop that will serve the calls.
    """

    def __init__(self, settings: ServerSettings, store: EventStore) -> None:
        self.settings = settings
        self.store = store
        self.counters = AppendCounters()
        self.follower = ProjectionFollower(
            store,
            batch_events=settings.projection_batch_events,
            wait_s=settings.projection_wait_s,
        )
        interceptors = []
        if settings.token is not None:
            interceptors.append(
                BearerTokenInterceptor(
                    settings.token, reads_require_token=settings.reads_require_token
                )
            )
        interceptors.append(DecodeGuardInterceptor())  # after auth: see sidecar.rpc_guard
        self._server = grpc.aio.server(
            interceptors=interceptors, options=server_options(settings)
        )
        self.service = EventLogService(store, settings, self.follower, self.counters)
        self.retention = RetentionJob(store, self.follower.runner, settings.retention)
        self._retention_task: asyncio.Task[None] | None = None
        eventlog_pb2_grpc.add_EventLogServicer_to_server(  # type: ignore[no-untyped-call]
            self.service, self._server
        )
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self._server,
        )
        self.port = 0
        self._follower_task: asyncio.Task[None] | None = None
        self._metrics_server: Any = None
        self._loaded = False
        """Projections resumed from their checkpoints: only then may ``stop`` save them (a
        start that failed before must not overwrite good checkpoints with empty state)."""

    async def start(self) -> None:
        """Bind the listen address (and metrics endpoint), start serving and projecting."""
        host, port = parse_host_port(self.settings.listen, "listen")
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        credentials = _credentials(self.settings)
        if credentials is None:
            self.port = self._server.add_insecure_port(address)
        else:
            self.port = self._server.add_secure_port(address, credentials)
        if self.port == 0:
            raise OSError(f"listen: cannot bind {self.settings.listen}")
        await self.follower.load()
        self._loaded = True
        self._follower_task = asyncio.create_task(self.follower.run(), name="projections")
        await self.retention.refresh()
        self._retention_task = asyncio.create_task(self.retention.run(), name="retention")
        await self._server.start()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.settings.metrics_listen is not None:
            snapshot = loop_snapshot(
                asyncio.get_running_loop(), self.follower, self.counters, self.store
            )
            cert_key = self.settings.metrics_tls
            self._metrics_server, _ = start_metrics_server(
                self.settings.metrics_listen,
                snapshot,
                certfile=str(cert_key[0]) if cert_key is not None else None,
                keyfile=str(cert_key[1]) if cert_key is not None else None,
                collectors=[RetentionCollector(self.retention, store_kind(self.settings.store_url),
                                               lambda: self.follower.head_position)],
            )
        log.info(
            "event log serving on %s (store %s, tls %s, token %s)",
            self.settings.listen,
            redact_url(self.settings.store_url),
            "on" if self.settings.tls else "off",
            "required" if self.settings.token else "off",
        )

    async def stop(self) -> None:
        """Graceful shutdown: NOT_SERVING, end subscriptions (with their resume positions), let
        unary calls finish within the grace period, save projections, close the store."""
        await self.health.enter_graceful_shutdown()
        self.service.end_subscriptions("the event log is shutting down")
        await self._server.stop(self.settings.shutdown_grace_s)
        step_s = self.settings.shutdown_step_timeout_s
        if self._retention_task is not None:
            self._retention_task.cancel()
            await self._bounded("stopping retention", self._retention_task, step_s)
        if self._follower_task is not None:
            self._follower_task.cancel()
            await self._bounded("stopping the projection follower", self._follower_task, step_s)
        if self._loaded:
            await self._bounded("saving projection checkpoints", self.follower.save(), step_s)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        await self._bounded("closing the store", self.store.close(), step_s)

    @staticmethod
    async def _bounded(what: str, step: Awaitable[Any], timeout_s: float) -> None:
        """One shutdown step, given at most ``timeout_s``: a stuck store must not keep a
        SIGTERMed server alive (projections resume from their last checkpoint anyway)."""
        try:
            await asyncio.wait_for(step, timeout_s)
        except asyncio.CancelledError:  # the follower task ends this way; we go on
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        except TimeoutError:
            log.warning("shutdown: %s took longer than %.1fs; going on", what, timeout_s)
        except StoreError as exc:
            log.warning("shutdown: %s failed: %s", what, exc)


async def serve(
    settings: ServerSettings, store: EventStore, *, ready: Callable[[], None] | None = None
) -> None:
    """Run the server until SIGTERM or SIGINT, then shut down gracefully."""
    server = EventLogServer(settings, store)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await server.start()
        if ready is not None:
            ready()
        await stopping.wait()
        log.info("event log stopping (signal)")
    finally:
        await server.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
