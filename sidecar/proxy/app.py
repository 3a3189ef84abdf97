"""Assembly of the sidecar proxy: data-path server, admin server, plugins, reload and shutdown.

:func:`build_app` is the one entry point other concerns plug into: telemetry and events hand
it call observers, breaker listeners and :class:`~sidecar.protection.hooks.ProxyPlugin` s
(start/stop hooks and a config-applied hook). It stays stable; everything else here is internal.

Lifecycle (:meth:`ProxyApp.serve`)
----------------------------------
- start: plugins start, then ``listen`` (the data path) and ``admin_listen`` (SidecarAdmin,
  grpc.health.v1, reflection) bind. A port that cannot be bound is an error at once.
- SIGHUP: the config file is read again. A bad file is refused and logged with every problem;
  the running config stays. A good one is applied: upstreams whose address and breaker layout
  (``per_method``) are unchanged keep their channel, breaker state, trip streak and in-flight
  count, and only get new settings (routes, timeout, limit, fallback, breaker thresholds via
  ``update_settings``; changed keepalive settings take a new connection). Upstreams that
  left, or changed address or layout, drain on their old channel (for ``shutdown_grace_s``)
  while new calls use the new one. ``listen``, ``admin_listen`` and ``metrics_listen`` need a
  restart (a warning says so).
- SIGTERM/SIGINT: health turns NOT_SERVING, the proxy stops accepting calls, in-flight calls get
  ``shutdown_grace_s`` to finish (then are cancelled), plugins stop, the process exits 0. A
  second SIGTERM during the drain ends the process at once (the default signal action).

Threading: everything runs on one asyncio event loop; signal handlers only schedule work on it.

Example::

    config = load_config("sidecar.yaml")
    app = build_app(config, plugins=[Telemetry(config).plugin()])
    asyncio.run(app.serve(config_path="sidecar.yaml"))
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from sidecar.balancer import EndpointListener
from sidecar.breaker import BreakerListener
from sidecar.config import (
    ConfigError,
    DnsDiscovery,
    ServerTlsConfig,
    SidecarConfig,
    UpstreamConfig,
    load_config,
)
from sidecar.protection import (
    BreakerRegistry,
    Bulkhead,
    CallObserver,
    ConfigSource,
    GuardSettings,
    ProxyPlugin,
    UpstreamGuard,
    combine_observers,
)
from sidecar.protection._shedding import poll_limiters
from sidecar.proxy._forward import ProxyHandler
from sidecar.proxy.admin import SidecarAdminServicer, upstream_of
from sidecar.proxy.discovery import DnsSource, EndpointSource, FileSource
from sidecar.proxy.upstream import CHANNEL_OPTIONS, Routing, Upstream, upstream_channel_options
from sidecar.resilience import SheddingListener
from sidecar.rpc_guard import DecodeGuardInterceptor
from sidecar.tls import TlsFileError, server_credentials
from sidecar.v1 import admin_pb2, admin_pb2_grpc

__all__ = ["ProxyApp", "build_app"]

_log = logging.getLogger("sidecar.proxy")

ADMIN_STOP_GRACE_S: Final = 1.0
"""How long admin calls in flight get at shutdown (after the data path has drained)."""
SERVER_OPTIONS: Final = (
    *CHANNEL_OPTIONS,
    ("grpc.so_reuseport", 0),  # a taken port must fail loudly, not be shared silently
)


def build_app(
    config: SidecarConfig,
    *,
    observers: Sequence[CallObserver] = (),
    breaker_listeners: Sequence[BreakerListener] = (),
    plugins: Sequence[ProxyPlugin] = (),
) -> ProxyApp:
    """The proxy for ``config``, with telemetry/events plugged in. Nothing starts until
    :meth:`ProxyApp.start` (or :meth:`ProxyApp.serve`) runs on an event loop.

    Observers are called in order: ``observers`` first, then each plugin's. Every breaker the
    proxy creates (at start, on reload, per method) gets every listener.
    """
    return ProxyApp(config, observers=observers, breaker_listeners=breaker_listeners,
                    plugins=plugins)


class ProxyApp:
    """A running (or ready to run) sidecar proxy; see the module docstring."""

    def __init__(
        self,
        config: SidecarConfig,
        *,
        observers: Sequence[CallObserver] = (),
        breaker_listeners: Sequence[BreakerListener] = (),
        plugins: Sequence[ProxyPlugin] = (),
    ) -> None:
        self.config = config
        self.plugins: tuple[ProxyPlugin, ...] = ()
        self._observers = list(observers)
        self.breakers = BreakerRegistry(breaker_listeners)
        """Every breaker of this proxy, by name (the admin API and telemetry read it)."""
        self._endpoint_listeners: list[EndpointListener] = []
        self._shedding_listeners: list[SheddingListener] = []
        self._handler = ProxyHandler(Routing({}, {}), combine_observers(self._observers))
        self._server: Any = None
        self._admin_server: Any = None
        self._health = HealthServicer()
        self._stopping: asyncio.Event | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.port = 0
        """The bound data-path port (after start)."""
        self.admin_port = 0
        for plugin in plugins:
            self.add_plugin(plugin)

    def add_plugin(self, plugin: ProxyPlugin) -> None:
        """Plug in one more plugin (before :meth:`start`): its observers run after the ones
        already there, its listeners join every breaker."""
        if self._server is not None:
            raise RuntimeError("add plugins before the proxy starts")
        self.plugins = (*self.plugins, plugin)
        self._observers.extend(plugin.observers)
        self._handler.set_observer(combine_observers(self._observers))
        for listener in plugin.breaker_listeners:
            self.breakers.add_listener(listener)
        self._endpoint_listeners.extend(plugin.endpoint_listeners)
        self._shedding_listeners.extend(plugin.shedding_listeners)
        if plugin.watch_upstreams is not None:
            plugin.watch_upstreams(lambda: self.upstreams)

    @property
    def upstreams(self) -> dict[str, Upstream]:
        return self._handler.routing.upstreams

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start plugins and both servers; raises ``RuntimeError`` if a port cannot be bound."""
        for plugin in self.plugins:
            if plugin.start is not None:
                await plugin.start()
        routing, _ = self._build_routing(self.config, {})
        self._handler.set_routing(routing)
        await asyncio.gather(*(upstream.start_discovery()
                               for upstream in routing.upstreams.values()))

        server = grpc.aio.server(options=SERVER_OPTIONS)
        server.add_generic_rpc_handlers((self._handler,))
        self.port = _bind(server, self.config.listen, "listen", self.config.listen_tls)
        admin = grpc.aio.server(options=(("grpc.so_reuseport", 0),),
                                interceptors=[DecodeGuardInterceptor()])
        admin_pb2_grpc.add_SidecarAdminServicer_to_server(  # type: ignore[no-untyped-call]
            SidecarAdminServicer(self.breakers, self._limit_of, lambda: self.upstreams), admin)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, admin)
        reflection.enable_server_reflection((
            admin_pb2.DESCRIPTOR.services_by_name["SidecarAdmin"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ), admin)
        self.admin_port = _bind(admin, self.config.admin_listen, "admin_listen",
                                self.config.admin_tls)
        await server.start()
        await admin.start()
        self._server, self._admin_server = server, admin
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self._health.set("sidecar.v1.SidecarAdmin", health_pb2.HealthCheckResponse.SERVING)
        self._config_applied(self.config, "start")
        self._spawn(poll_limiters(lambda: [u.guard.limiter for u in self.upstreams.values()]))
        _log.info("sidecar proxy serving on %s (admin %s), upstreams: %s",
                  self.config.listen, self.config.admin_listen,
                  ", ".join(sorted(self.config.upstreams)),
                  extra={"event": "start", "listen": self.config.listen,
                         "admin_listen": self.config.admin_listen})

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop accepting calls, let in-flight calls finish for ``grace_s`` (default
        ``shutdown_grace_s``), then stop the admin server, plugins and channels."""
        grace = self.config.shutdown_grace_s if grace_s is None else grace_s
        _log.info("sidecar proxy draining for up to %.1f s", grace,
                  extra={"event": "shutdown", "grace_s": grace})
        await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace)
        if self._admin_server is not None:
            await self._admin_server.stop(ADMIN_STOP_GRACE_S)
        for upstream in self.upstreams.values():
            await upstream.close(None)
        for task in list(self._background):
            task.cancel()
        for plugin in reversed(self.plugins):
            if plugin.stop is not None:
                try:
                    await plugin.stop()
                except Exception:
                    _log.exception("plugin %s failed to stop", plugin.name)
        _log.info("sidecar proxy stopped", extra={"event": "shutdown"})

    async def serve(self, config_path: str | Path | None = None) -> None:
        """Start, then run until SIGTERM/SIGINT (drain, stop); SIGHUP reloads ``config_path``."""
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        await self.start()
        loop.add_signal_handler(signal.SIGTERM, self._stopping.set)
        loop.add_signal_handler(signal.SIGINT, self._stopping.set)
        if config_path is not None:
            path = config_path
            loop.add_signal_handler(signal.SIGHUP, lambda: self.reload_file(path))
        try:
            await self._stopping.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self.stop()

    def request_stop(self) -> None:
        """Ask :meth:`serve` to drain and return (as SIGTERM does)."""
        if self._stopping is not None:
            self._stopping.set()

    # --- reload ------------------------------------------------------------------------------

    def reload_file(self, path: str | Path) -> bool:
        """Read ``path`` and apply it; True when applied.

        The SIGHUP callback: it never raises. A bad file (:class:`ConfigError`) or any other
        failure while loading is refused with one log line and nothing changes; a failure while
        applying is one log line too, and ``self.config`` stays the running config.
        """
        try:
            config = load_config(path)
        except ConfigError as exc:
            _log.error("config reload refused, keeping the running config: %s: %s",
                       exc.source, "; ".join(exc.problems),
                       extra={"event": "reload", "accepted": False, "problems": exc.problems})
            return False
        except Exception as exc:  # a bug in loading: still keep running
            _log.error("config reload refused, keeping the running config: %s: %s: %s",
                       path, type(exc).__name__, exc, exc_info=True,
                       extra={"event": "reload", "accepted": False})
            return False
        try:
            self.reload(config)
        except Exception as exc:
            _log.error("config reload of %s failed part way (%s: %s): the previous config "
                       "stays the running one; upstreams reconfigured before the failure keep "
                       "their new settings", path, type(exc).__name__, exc, exc_info=True,
                       extra={"event": "reload", "accepted": False})
            return False
        return True

    def reload(self, config: SidecarConfig) -> None:
        """Apply a validated config to the running proxy (call on its event loop)."""
        for key in ("listen", "admin_listen", "metrics_listen", "listen_tls", "admin_tls"):
            if getattr(config, key) != getattr(self.config, key):
                _log.warning("%s changed (%s -> %s): takes effect after a restart", key,
                             getattr(self.config, key), getattr(config, key),
                             extra={"event": "reload"})
        before = self.upstreams
        routing, retired = self._build_routing(config, before)
        self._handler.set_routing(routing)
        for upstream in routing.upstreams.values():
            if upstream.discovery is not None and not upstream.discovery.running:
                self._spawn(upstream.start_discovery())
        old_names = set(before)
        for upstream in retired:
            self._spawn(upstream.close(config.shutdown_grace_s))
        self.config = config
        self._config_applied(config, "reload")
        _log.info("config reloaded: upstreams %s", ", ".join(sorted(config.upstreams)),
                  extra={"event": "reload", "accepted": True,
                         "added": sorted(set(config.upstreams) - old_names),
                         "removed": sorted(old_names - set(config.upstreams)),
                         "replaced": sorted(u.name for u in retired
                                            if u.name in config.upstreams)})

    def _build_routing(self, config: SidecarConfig,
                       current: dict[str, Upstream]) -> tuple[Routing, list[Upstream]]:
        upstreams: dict[str, Upstream] = {}
        retired: list[Upstream] = []
        for name, prev in current.items():
            cfg = config.upstreams.get(name)
            if cfg is None or cfg.per_method != prev.guard.settings.per_method:
                self.breakers.discard(prev.guard.breaker_names())
                retired.append(prev)
        for name, cfg in config.upstreams.items():
            settings = GuardSettings.from_config(cfg)
            policies = cfg.resilience_policies()
            options = upstream_channel_options(cfg.keepalive_ms, cfg.keepalive_timeout_ms,
                                               own_retries=policies.enabled)
            kept = current.get(name)
            if kept is not None and kept not in retired:
                kept.guard.reconfigure(settings)
                kept.reconfigure(cfg.timeout_ms / 1000.0, options, cfg.balancer_settings(),
                                 cfg.outlier_detection.to_settings())
                kept.set_policies(policies)
                old = self.config.upstreams.get(name)
                if old is None or (old.address, old.endpoints, old.discovery) != (
                        cfg.address, cfg.endpoints, cfg.discovery):
                    _apply_endpoints(kept, name, cfg)
                upstreams[name] = kept
            else:
                guard = UpstreamGuard(name, settings, self.breakers,
                                      shedding_listeners=self._shedding_listeners)
                upstream = Upstream(name, cfg.timeout_ms / 1000.0, guard,
                                    self._handler.forget_handlers, options,
                                    balancer=cfg.balancer_settings(),
                                    outlier=cfg.outlier_detection.to_settings(),
                                    listeners=self._endpoint_listeners)
                upstream.set_policies(policies)
                _apply_endpoints(upstream, name, cfg)
                upstreams[name] = upstream
        routes = {route: upstreams[name]
                  for name, cfg in config.upstreams.items() for route in cfg.routes}
        return Routing(upstreams, routes), retired

    # --- helpers -------------------------------------------------------------------------------

    def _limit_of(self, breaker: str) -> Bulkhead | None:
        """The concurrency limit of the upstream a breaker belongs to (``upstream`` or, with
        ``per_method``, ``upstream/pkg.Svc/Method``)."""
        upstreams = self.upstreams
        found = upstreams.get(breaker) or upstreams.get(upstream_of(breaker))
        return found.guard.bulkhead if found is not None else None

    def _config_applied(self, config: SidecarConfig, source: ConfigSource) -> None:
        for plugin in self.plugins:
            if plugin.config_applied is not None:
                try:
                    plugin.config_applied(config, source)
                except Exception:
                    _log.exception("plugin %s failed on config_applied", plugin.name)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def discovery_source(cfg: UpstreamConfig) -> EndpointSource | None:
    """The discovery source an upstream's config asks for (None: static endpoints)."""
    discovery = cfg.discovery
    if discovery is None:
        return None
    if isinstance(discovery, DnsDiscovery):
        host, _, port = discovery.dns.rpartition(":")
        resolver = None
        if discovery.resolver is not None:
            r_host, _, r_port = discovery.resolver.rpartition(":")
            resolver = (r_host.strip("[]"), int(r_port))
        return DnsSource(host.strip("[]"), int(port), discovery.refresh_ms / 1000.0, resolver,
                         discovery.timeout_ms / 1000.0)
    return FileSource(discovery.file, discovery.poll_ms / 1000.0)


def _apply_endpoints(upstream: Upstream, name: str, cfg: UpstreamConfig) -> None:
    """Point ``upstream`` at the endpoints ``cfg`` names: a static set at once, or a discovery
    source (the caller starts it)."""
    source = discovery_source(cfg)
    upstream.use_discovery(source)
    if source is None:
        upstream.set_endpoints(cfg.static_endpoints, cfg.source)


_TLS_KEYS: Final = {"listen": "listen_tls", "admin_listen": "admin_tls"}
"""The config key holding each listener's TLS files (named in errors)."""


def _bind(server: Any, address: str, key: str, tls: ServerTlsConfig | None = None) -> int:
    """Bind ``address`` (TLS, or mTLS with a client CA, when ``tls`` is set; the files are read
    now). ``RuntimeError`` naming ``key`` when the port cannot be bound."""
    try:
        if tls is None:
            port: int = server.add_insecure_port(address)
        else:
            credentials = server_credentials(tls.cert_file, tls.key_file, tls.client_ca_file,
                                             key=_TLS_KEYS.get(key, key))
            port = server.add_secure_port(address, credentials)
    except TlsFileError as exc:
        raise RuntimeError(str(exc)) from None
    except RuntimeError as exc:
        raise RuntimeError(f"{key}: cannot listen on {address}: {exc}") from None
    if port == 0:
        raise RuntimeError(f"{key}: cannot listen on {address}")
    return port
