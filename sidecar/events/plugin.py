"""The event pipeline of one sidecar, assembled from its config and plugged into the proxy.

::

    breaker ──on_transition──▶ EventRecorder ──offer──▶ EventQueue (memory, bounded)
                                                            │ OutboxWriter thread
                                                            ▼
                                                  Outbox (SQLite, WAL): numbered + chained
                                                            │ Shipper thread (+ own breaker)
                                                            ▼
                                               EventLog.Append over gRPC (GrpcEventExporter)

Every upstream's balancer feeds the same recorder (``on_ejected``, ``on_returned``,
``on_endpoints_changed``): endpoint events take exactly the path, and the drop rules, of
breaker transitions.

:class:`EventPipeline` owns all of it; :func:`proxy_plugin` is the ``sidecar proxy`` plugin
factory (``sidecar.proxy.cli.PLUGIN_FACTORIES``). Without an ``eventlog:`` section the factory
returns an empty plugin: the sidecar runs, and breaker changes reach only traces, metrics and
logs.

Lifecycle: ``start`` opens the outbox (an outbox locked by another process, or unreadable, stops
the sidecar from starting: two writers would fork the chain) and starts both threads, off the
event loop. ``config_applied`` records a ``ConfigApplied`` event (start and each reload).
``stop`` writes what is queued, then ships what it can within
``min(shutdown_flush_timeout_ms, shutdown_grace_s)``; the rest stays in the outbox and ships
after the next start.

The event log's bearer token, if it needs one, comes from ``SIDECAR_EVENTLOG_TOKEN`` or the
file named by ``SIDECAR_EVENTLOG_TOKEN_FILE`` (never from the config file, never logged).

Example::

    pipeline = EventPipeline(config, registry=registry)
    app = build_app(config, plugins=[pipeline.plugin()])
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

from sidecar.events.metrics import EventsCollector
from sidecar.events.outbox import Outbox, OutboxWriter
from sidecar.events.producer import EventQueue, EventRecorder
from sidecar.events.shipper import EventExporter, GrpcEventExporter, Shipper
from sidecar.tls import channel_credentials

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from sidecar.config import SidecarConfig
    from sidecar.protection import BreakerRegistry, ConfigSource, ProxyPlugin

__all__ = ["ENV_TOKEN", "ENV_TOKEN_FILE", "PLUGIN_NAME", "EventPipeline", "proxy_plugin"]

PLUGIN_NAME: Final = "events"
ENV_TOKEN: Final = "SIDECAR_EVENTLOG_TOKEN"
ENV_TOKEN_FILE: Final = "SIDECAR_EVENTLOG_TOKEN_FILE"

_log = logging.getLogger("sidecar.events")


def resolve_token(environ: Mapping[str, str]) -> str | None:
    """The event log's bearer token from the environment (``None`` when there is none)."""
    token = environ.get(ENV_TOKEN, "").strip()
    if token:
        return token
    path = environ.get(ENV_TOKEN_FILE, "").strip()
    if path:
        return Path(path).read_text().strip() or None
    return None


class EventPipeline:
    """Recorder, queue, outbox, writer and shipper of one sidecar; see the module docstring.

    ``registry`` receives the pipeline's metrics (the telemetry's registry, so they appear on
    the sidecar's ``/metrics``). ``exporter`` replaces the gRPC exporter in tests.
    """

    def __init__(self, config: SidecarConfig, *, registry: CollectorRegistry | None = None,
                 exporter: EventExporter | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        if config.eventlog is None:
            raise ValueError("eventlog: the config has no eventlog section")
        self.config = config
        self.address = config.eventlog.address
        self.settings = config.eventlog.to_settings()
        self.queue = EventQueue(self.settings.queue_size)
        self.recorder = EventRecorder(config.service, config.instance, self.queue)
        self.outbox: Outbox | None = None
        self.writer: OutboxWriter | None = None
        self.shipper: Shipper | None = None
        self._exporter = exporter
        self._environ = os.environ if environ is None else environ
        if registry is not None:
            registry.register(EventsCollector(queue=self.queue, outbox=lambda: self.outbox,
                                              shipper=lambda: self.shipper))

    @property
    def flush_timeout_s(self) -> float:
        """How long :meth:`close` may spend shipping at shutdown."""
        return min(self.settings.shutdown_flush_timeout_ms / 1000,
                   self.config.shutdown_grace_s)

    def open(self) -> None:
        """Open the outbox and start the writer and shipper threads (blocking: disk I/O).

        Raises :class:`~sidecar.events.outbox.OutboxError` when the outbox cannot be used.
        """
        if self.outbox is not None:
            return
        outbox = Outbox(self.settings.outbox_path, max_events=self.settings.outbox_max_events,
                        keep_acked=self.settings.outbox_keep_acked)
        tls = self.config.eventlog.tls if self.config.eventlog is not None else None
        exporter = self._exporter or GrpcEventExporter(
            self.address, token=resolve_token(self._environ),
            max_reconnect_backoff_ms=int(self.settings.backoff_max_ms),
            credentials=None if tls is None else channel_credentials(
                tls.ca_file, tls.cert_file, tls.key_file, key="eventlog.tls"),
            server_name=None if tls is None else tls.server_name)
        shipper = Shipper(outbox, exporter, self.settings)
        writer = OutboxWriter(self.queue, outbox, batch_size=self.settings.batch_size,
                              on_written=shipper.wake)
        self.outbox, self.shipper, self.writer = outbox, shipper, writer
        shipper.start()
        writer.start()
        stats = outbox.stats()
        _log.info("breaker events go to %s through the outbox %s (%d unshipped from before)",
                  self.address, outbox.path, stats.pending,
                  extra={"event": "start", "eventlog": self.address,
                         "outbox_path": str(outbox.path), "outbox_pending": stats.pending})

    def close(self, timeout_s: float | None = None) -> None:
        """Write what is queued, ship what can be shipped within ``timeout_s`` (default
        :attr:`flush_timeout_s`), stop both threads and close the outbox (blocking)."""
        budget = self.flush_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + budget
        if self.writer is not None:
            self.writer.stop(max(0.0, deadline - time.monotonic()))
        if self.shipper is not None:
            self.shipper.stop(max(0.0, deadline - time.monotonic()))
        if self.outbox is not None:
            left = self.outbox.stats().pending
            log = _log.warning if left else _log.info
            log("event pipeline stopped; %d events stay in the outbox for the next start", left,
                extra={"event": "shutdown", "outbox_pending": left})
            self.outbox.close()

    async def start(self) -> None:
        """:meth:`open` off the event loop."""
        await asyncio.to_thread(self.open)

    async def stop(self) -> None:
        """:meth:`close` off the event loop."""
        await asyncio.to_thread(self.close)

    def config_applied(self, config: SidecarConfig, source: ConfigSource) -> None:
        """Record a ``ConfigApplied`` event (never blocks). Where events go, and the stream
        name, are fixed at start: a reload that changes them is applied after a restart."""
        from sidecar.config import config_digest

        if source == "reload":
            if config.eventlog != self.config.eventlog or config.stream != self.config.stream:
                _log.warning("eventlog settings, service or instance changed: the event "
                             "pipeline keeps the old ones until a restart",
                             extra={"event": "reload"})
        self.recorder.config_applied(config_digest(config), config.upstreams, source)

    def plugin(self) -> ProxyPlugin:
        """The proxy plugin: the recorder on every breaker and every upstream's balancer,
        start/stop, config events."""
        from sidecar.protection import ProxyPlugin

        return ProxyPlugin(name=PLUGIN_NAME, breaker_listeners=(self.recorder,),
                           endpoint_listeners=(self.recorder,),
                           shedding_listeners=(self.recorder,),
                           start=self.start, stop=self.stop,
                           config_applied=self.config_applied)


def proxy_plugin(config: SidecarConfig, breakers: BreakerRegistry, *,
                 registry: CollectorRegistry | None = None) -> ProxyPlugin:
    """The ``sidecar proxy`` plugin factory: the event pipeline when ``eventlog`` is
    configured, otherwise a plugin that does nothing."""
    from sidecar.protection import ProxyPlugin

    if config.eventlog is None:
        _log.info("no eventlog configured: breaker changes go to traces, metrics and logs only",
                  extra={"event": "start"})

        def eventlog_added(new: SidecarConfig, source: ConfigSource) -> None:
            if source == "reload" and new.eventlog is not None:
                _log.warning("an eventlog section was added: it takes effect after a restart",
                             extra={"event": "reload"})

        return ProxyPlugin(name=PLUGIN_NAME, config_applied=eventlog_added)
    return EventPipeline(config, registry=registry).plugin()
