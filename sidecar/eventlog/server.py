"""The event log's gRPC server: ``sidecar.v1.EventLog`` over an :class:`EventStore`.

The assembly: the calls themselves are :mod:`sidecar.eventlog.api.service` (what a call goes
through is told there). This module binds the port (TLS optional), installs the interceptors
(bearer token, decode guard), and runs beside the service the projection follower
(:class:`~sidecar.eventlog.projections.follower.ProjectionFollower`, whose views answer
GetBreakerStatus / ListBreakerStatus and the Prometheus collector), the retention job
(:mod:`sidecar.eventlog.retention.job`) and ``/metrics``.

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
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any, Final

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from sidecar.eventlog.api.auth import BearerTokenInterceptor
from sidecar.eventlog.api.service import EventLogService
from sidecar.eventlog.metrics import AppendCounters, loop_snapshot, start_metrics_server
from sidecar.eventlog.nats_auth import redact_url
from sidecar.eventlog.port import (
    EventStore,
    StoreError,
    store_kind,
)
from sidecar.eventlog.projections.follower import ProjectionFollower
from sidecar.eventlog.retention.job import RetentionCollector, RetentionJob
from sidecar.eventlog.settings import (
    ServerSettings,
    parse_host_port,
)
from sidecar.rpc_guard import DecodeGuardInterceptor
from sidecar.v1 import eventlog_pb2_grpc

log = logging.getLogger("sidecar.eventlog.server")

SERVICE_NAME: Final = "sidecar.v1.EventLog"


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
