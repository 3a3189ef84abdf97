"""Tracing, metrics and logs for one sidecar process, assembled from its config.

:class:`Telemetry` builds every piece of this package and hands the proxy one
:class:`~sidecar.protection.hooks.ProxyPlugin`: the call observers (tracing first, so the call's
span is current for the others), the breaker listeners (transition spans, the transitions
counter, transition log lines), the endpoint listeners on every upstream's balancer (ejection,
return and set-change spans, the endpoint metrics, their log lines), the ``/metrics`` server
(started and stopped with the proxy), the live upstreams (read at scrape time for refused
ejections) and the reload hook (log level, sample ratio, ``metrics.per_endpoint``, new
upstreams' counters).

Tracing is on unless ``OTEL_SDK_DISABLED=true``; then the proxy forwards the host's trace
headers untouched and no span is made (the "tracing off" baseline of the benchmarks).

``sidecar proxy`` gets it through :func:`proxy_plugin`. Example (in-process)::

    telemetry = Telemetry(config)
    app = build_app(config, plugins=[telemetry.plugin()])
    telemetry.watch_breakers(lambda: [b.view() for b in app.breakers.breakers()])
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry

from sidecar.balancer import EndpointListener
from sidecar.breaker import BreakerListener, BreakerView
from sidecar.telemetry.endpoint_metrics import EndpointMetrics, MetricsEndpointListener
from sidecar.telemetry.endpoint_tracing import EndpointTracer
from sidecar.telemetry.logging import (
    EVENT_CONFIG_APPLIED,
    LoggingBreakerListener,
    LoggingEndpointListener,
    set_log_level,
)
from sidecar.telemetry.metrics import (
    BreakerCollector,
    MetricsBreakerListener,
    MetricsObserver,
    MetricsServer,
    SidecarMetrics,
)
from sidecar.telemetry.observer import TelemetryObserver
from sidecar.telemetry.resilience_logging import LoggingSheddingListener
from sidecar.telemetry.resilience_metrics import ConcurrencyCollector
from sidecar.telemetry.tracing import (
    TracingObserver,
    TracingSetup,
    TransitionTracer,
    setup_tracing,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from sidecar.config import SidecarConfig
    from sidecar.protection import (
        BreakerRegistry,
        CallObserver,
        ConfigSource,
        ProxyPlugin,
        WatchedUpstream,
    )

__all__ = ["PLUGIN_NAME", "Telemetry", "proxy_plugin", "tracing_disabled"]

PLUGIN_NAME: Final = "telemetry"

_log = logging.getLogger("sidecar.telemetry")


def tracing_disabled(environ: Mapping[str, str] | None = None) -> bool:
    """True when the standard ``OTEL_SDK_DISABLED`` switch turns tracing off."""
    env = os.environ if environ is None else environ
    return env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


class Telemetry:
    """Everything observable about one sidecar; see the module docstring.

    ``registry``, ``span_exporter`` and ``serve_metrics`` exist for tests and benchmarks: a
    fresh registry, an in-memory exporter, no HTTP server.
    """

    def __init__(
        self,
        config: SidecarConfig,
        *,
        registry: CollectorRegistry | None = None,
        span_exporter: SpanExporter | None = None,
        serve_metrics: bool = True,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.registry = CollectorRegistry() if registry is None else registry
        self.metrics = SidecarMetrics(self.registry)
        self.metrics.declare_upstreams(config.upstreams)
        self.metrics.per_endpoint.set_enabled(config.metrics.per_endpoint)
        self.endpoint_metrics = EndpointMetrics(self.registry)
        self.endpoint_metrics.declare_upstreams(config.upstreams)
        self.tracing: TracingSetup | None = (
            None if tracing_disabled(environ)
            else setup_tracing(config, exporter=span_exporter, environ=environ)
        )
        listeners: list[BreakerListener] = []
        endpoint_listeners: list[EndpointListener] = []
        self.tracing_observer: TracingObserver | None = None
        if self.tracing is not None:
            self.tracing_observer = TracingObserver(self.tracing.tracer)
            listeners.append(TransitionTracer(self.tracing.tracer))
            endpoint_listeners.append(EndpointTracer(self.tracing.tracer))
        self.metrics_observer = MetricsObserver(self.metrics)
        listeners += [MetricsBreakerListener(self.metrics), LoggingBreakerListener()]
        endpoint_listeners += [MetricsEndpointListener(self.endpoint_metrics),
                               LoggingEndpointListener()]
        # One observer for both (tracing first): see sidecar.telemetry.observer.
        self.observers: tuple[CallObserver, ...] = (
            TelemetryObserver(self.tracing_observer, self.metrics_observer),)
        self.breaker_listeners: tuple[BreakerListener, ...] = tuple(listeners)
        self.endpoint_listeners: tuple[EndpointListener, ...] = tuple(endpoint_listeners)
        self._serve_metrics = serve_metrics
        self.metrics_server: MetricsServer | None = None
        self._collector: BreakerCollector | None = None
        self._concurrency: ConcurrencyCollector | None = None

    def watch_breakers(self, views: Callable[[], Iterable[BreakerView]]) -> None:
        """Export breaker state and open duration from ``views`` (called at each scrape, on the
        HTTP server's thread). Replaces an earlier source."""
        if self._collector is not None:
            self.registry.unregister(self._collector)
        self._collector = BreakerCollector(views)
        self.registry.register(self._collector)

    def watch_upstreams(self, upstreams: Callable[[], Mapping[str, WatchedUpstream]]) -> None:
        """Read refused ejections (``sidecar_endpoint_ejections_refused_total``) and the
        concurrency limits (``sidecar_concurrency_limit``/``_in_flight``) from the live
        upstreams at each scrape (the proxy calls this through its plugin hook). Only the
        balancers' ``ejections_refused`` attribute is read, on the scrape thread."""
        self.endpoint_metrics.watch_refused(
            lambda: {name: upstream.balancer.ejections_refused
                     for name, upstream in upstreams().items()})
        if self._concurrency is not None:
            self.registry.unregister(self._concurrency)
        self._concurrency = ConcurrencyCollector(upstreams)
        self.registry.register(self._concurrency)

    def plugin(self) -> ProxyPlugin:
        """The proxy plugin carrying this telemetry."""
        from sidecar.protection import ProxyPlugin

        return ProxyPlugin(
            name=PLUGIN_NAME,
            observers=self.observers,
            breaker_listeners=self.breaker_listeners,
            endpoint_listeners=self.endpoint_listeners,
            shedding_listeners=(LoggingSheddingListener(),),
            start=self.start,
            stop=self.stop,
            config_applied=self.config_applied,
            watch_upstreams=self.watch_upstreams,
        )

    async def start(self) -> None:
        """Serve ``/metrics`` on ``metrics_listen``; ``RuntimeError`` naming the key if the
        address cannot be bound (the proxy then exits 1, as for its own ports)."""
        if self._serve_metrics and self.metrics_server is None:
            address = self.config.metrics_listen
            try:
                tls = self.config.metrics_tls
                self.metrics_server = MetricsServer.start(
                    address,
                    self.registry,
                    certfile=str(tls.cert_file) if tls is not None else None,
                    keyfile=str(tls.key_file) if tls is not None else None,
                )
            except ssl.SSLError as exc:
                raise RuntimeError(f"metrics_tls: cannot use the cert or key: {exc}") from None
            except OSError as exc:
                raise RuntimeError(
                    f"metrics_listen: cannot listen on {address}: {exc.strerror or exc}"
                ) from None
            _log.info("metrics on %s://%s:%d/metrics",
                      "https" if self.config.metrics_tls is not None else "http",
                      self.metrics_server.host,
                      self.metrics_server.port,
                      extra={"event": "start", "metrics_port": self.metrics_server.port})

    async def stop(self) -> None:
        """Flush queued spans (bounded wait, off the event loop) and stop serving metrics."""
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)
        if self.metrics_server is not None:
            await asyncio.to_thread(self.metrics_server.close)
            self.metrics_server = None

    def close(self) -> None:
        """Blocking version of :meth:`stop`, for code without an event loop."""
        if self.tracing is not None:
            self.tracing.shutdown()
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None

    def config_applied(self, config: SidecarConfig, source: ConfigSource) -> None:
        """Log the config in force; on reload apply the sample ratio, ``metrics.per_endpoint``,
        the new upstreams' counters (removed upstreams leave the endpoint gauge) and, last (so
        this line is still written under the old level), the log level.
        The OTLP endpoint and ``metrics_listen`` need a restart (the proxy warns about the
        latter, :meth:`TracingSetup.apply` about the former)."""
        from sidecar.config import config_digest

        if source == "reload":
            if self.tracing is not None:
                self.tracing.apply(config.tracing)
            self.metrics.declare_upstreams(config.upstreams)
            self.metrics.per_endpoint.set_enabled(config.metrics.per_endpoint)
            self.endpoint_metrics.declare_upstreams(config.upstreams)
        self.config = config
        _log.info(
            "config applied (%s)", source,
            extra={
                "event": EVENT_CONFIG_APPLIED,
                "source": source,
                "config_digest": config_digest(config),
                "upstreams": sorted(config.upstreams),
                "log_level": config.logging.level,
                "tracing": self.tracing is not None,
                "otlp_endpoint": self.tracing.endpoint if self.tracing else None,
                "sample_ratio": self.tracing.sampler.ratio if self.tracing else None,
            },
        )
        if source == "reload":
            set_log_level(config.logging.level)


def proxy_plugin(config: SidecarConfig, breakers: BreakerRegistry, *,
                 registry: CollectorRegistry | None = None) -> ProxyPlugin:
    """The ``sidecar proxy`` plugin factory (``sidecar.proxy.cli.PLUGIN_FACTORIES``): telemetry
    for ``config``, with breaker state read from the proxy's registry at each scrape.
    ``registry`` is shared by every plugin (it is what ``/metrics`` serves)."""
    telemetry = Telemetry(config, registry=registry)
    telemetry.watch_breakers(lambda: [breaker.view() for breaker in breakers.breakers()])
    return telemetry.plugin()
